<#
.SYNOPSIS
    Run the NAS's daily ops cycle from this Windows PC through `krx serve` (POST /api/ops/cycle/run?confirm=true)
    and report its receipt.

.DESCRIPTION
    For a person (or Task Scheduler) on the PC who runs the day on the NAS without a shell there. The NAS's
    `krx serve` listens on 127.0.0.1:8000: reach it through an SSH tunnel (ssh -L 8000:127.0.0.1:8000 nas), or
    on the network when the NAS sets api.allow_remote: true.

    The operator token comes from $env:KRX_OPERATOR_TOKEN or -TokenFile (a file holding it); it is sent as an
    Authorization header and never printed. The cycle's receipt is read back (GET /api/ops/daily) and its
    snapshot through the resolver (GET /api/ops/resolve?ref=...).

    Exit code: 0 COMPLETED or WARN, 2 BLOCKED (a safety check: the emergency stop, a failed preflight, another
    cycle running), 3 FAILED or no answer.

.PARAMETER Api
    The server (default: $env:KRX_API, else http://127.0.0.1:8000).

.PARAMETER TokenFile
    A file whose first line is the operator token (default: $env:KRX_OPERATOR_TOKEN).

.EXAMPLE
    $env:KRX_OPERATOR_TOKEN = Get-Content $HOME\krx-operator.token
    .\scripts\windows\run_ops_cycle.ps1
#>
[CmdletBinding()]
param(
    [string]$Api = $(if ($env:KRX_API) { $env:KRX_API } else { 'http://127.0.0.1:8000' }),
    [string]$TokenFile = ''
)

$ErrorActionPreference = 'Stop'
$Api = $Api.TrimEnd('/')
$token = if ($TokenFile) { (Get-Content -LiteralPath $TokenFile -TotalCount 1).Trim() } else { $env:KRX_OPERATOR_TOKEN }
if (-not $token) {
    Write-Output 'run_ops_cycle: FAILED: a POST needs an operator: set KRX_OPERATOR_TOKEN or give -TokenFile'
    exit 3
}
$headers = @{ Authorization = "Bearer $token" }

function Invoke-Api([string]$Method, [string]$Path) {
    # Returns @(status, body object); status 0 when there was no answer. Never throws on an HTTP error.
    try {
        $r = Invoke-WebRequest -Uri "$Api$Path" -Method $Method -Headers $headers -UseBasicParsing -TimeoutSec 3600
        return @([int]$r.StatusCode, ($r.Content | ConvertFrom-Json))
    } catch {
        $resp = $_.Exception.Response
        if ($null -eq $resp) { return @(0, [pscustomobject]@{ code = 'NO_ANSWER'; message = $_.Exception.Message }) }
        # the answer's {code, message}: ErrorDetails holds the body in Windows PowerShell 5.1 and PowerShell 7
        $text = if ($_.ErrorDetails) { $_.ErrorDetails.Message } else { '' }
        $body = [pscustomobject]@{ code = 'HTTP'; message = "$($resp.StatusCode)" }
        if ($text) {
            try { $body = $text | ConvertFrom-Json } catch { }
        }
        return @([int]$resp.StatusCode, $body)
    }
}

$status, $run = Invoke-Api 'POST' '/api/ops/cycle/run?confirm=true'
if ($status -ne 200) {
    Write-Output "run_ops_cycle: FAILED: HTTP $status $($run.code): $($run.message)"
    if ($status -eq 409) { exit 2 }   # another cycle is running: a safety check, not a failure
    exit 3
}
$status, $daily = Invoke-Api 'GET' '/api/ops/daily'
if ($status -ne 200 -or $daily.run_id -ne $run.run_id) {
    Write-Output "run_ops_cycle: FAILED: the latest receipt is not run $($run.run_id) (HTTP $status)"
    exit 3
}
foreach ($step in $daily.steps) {
    Write-Output ("  {0,-15} {1,-8} {2}" -f $step.name, $step.status, $step.details)
}
$ref = [uri]::EscapeDataString($daily.snapshot_ref)
$status, $snap = Invoke-Api 'GET' "/api/ops/resolve?ref=$ref"
if ($status -ne 200 -or $snap.run_id -ne $run.run_id) {
    Write-Output "run_ops_cycle: FAILED: the snapshot $($daily.snapshot_ref) does not resolve (HTTP $status)"
    exit 3
}
Write-Output "run_ops_cycle: $($run.result) ($($run.reason)) run $($run.run_id) -> $($daily.snapshot_ref)"
exit [int]$run.exit_code
