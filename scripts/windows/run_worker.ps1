<#
.SYNOPSIS
    Run the krx backtest worker on this Windows PC, on the queue the NAS shares (krx worker --polling).

.DESCRIPTION
    Activates the project's virtual environment and runs `krx worker --polling` with KRX_HOME on the share.
    Polling, because native file events (ReadDirectoryChangesW) are not reliable for files another machine writes
    into an SMB share; the worker also scans the inbox at start-up and every interval, so nothing is missed.

    The script supervises the worker: it waits for the share to be reachable (the network often comes up after
    logon), and restarts the worker when it crashes (exit code other than 0), with a growing pause. Exit code 0
    means the worker was stopped on purpose (Ctrl+C), and the script ends too. A killed worker (Task Scheduler's
    "End", logoff, power loss) loses nothing: its claim goes back to the inbox after the lease.

.PARAMETER KrxHome
    The krx home holding configs\, data\, reports\ and logs\ (default: $env:KRX_HOME, else Z:\krx).
    A UNC path (\\nas\share\krx) also works and does not depend on a drive mapping.

.PARAMETER Inbox
    The queue's inbox (default: <KrxHome>\reports\pending); processing\ and failed\ sit beside it.

.PARAMETER Out
    Where results go (default: done\ beside the inbox).

.PARAMETER Venv
    The virtual environment (default: the .venv folder of the repository this script lives in).

.PARAMETER Interval
    Seconds between inbox scans and polls (default: app.yaml worker.interval_s).

.PARAMETER Once
    Process everything pending, then exit (no supervision loop).

.EXAMPLE
    powershell -NoProfile -ExecutionPolicy Bypass -File scripts\windows\run_worker.ps1 -KrxHome Z:\krx
#>
[CmdletBinding()]
param(
    [string]$KrxHome = $(if ($env:KRX_HOME) { $env:KRX_HOME } else { "Z:\krx" }),
    [string]$Inbox = "",
    [string]$Out = "",
    [string]$Venv = (Join-Path (Split-Path -Parent (Split-Path -Parent $PSScriptRoot)) ".venv"),
    [double]$Interval = 0,
    [switch]$Once,
    [int]$ShareWaitMinutes = 30
)

$ErrorActionPreference = "Stop"

function Write-Line([string]$Level, [string]$Event, [string]$Details) {
    # the project's log line format, so this script's lines read like the worker's own
    $ts = Get-Date -Format "yyyy-MM-dd HH:mm:ss"
    Write-Host "[$ts] [$Level] [$Event] details=$Details"
}

$activate = Join-Path $Venv "Scripts\Activate.ps1"
if (-not (Test-Path $activate)) {
    Write-Line "ERROR" "WORKER_SCRIPT" "no virtual environment at $Venv (python -m venv .venv; .venv\Scripts\pip install -e .)"
    exit 3
}
. $activate

if (-not $Inbox) { $Inbox = Join-Path $KrxHome "reports\pending" }

# The share may not be there yet right after logon: wait for it rather than fail.
$deadline = (Get-Date).AddMinutes($ShareWaitMinutes)
while (-not (Test-Path $Inbox)) {
    if ((Get-Date) -gt $deadline) {
        Write-Line "ERROR" "WORKER_SCRIPT" "inbox $Inbox not reachable after $ShareWaitMinutes minutes"
        exit 3
    }
    Write-Line "WARNING" "WORKER_SCRIPT" "waiting for $Inbox (share not reachable yet)"
    Start-Sleep -Seconds 15
}

$env:KRX_HOME = $KrxHome
$env:PYTHONUTF8 = "1"              # Korean names in logs and reports, whatever the console code page
$env:PYTHONIOENCODING = "utf-8"
Set-Location $KrxHome              # relative paths in configs resolve against the home

$workerArgs = @("worker", "--polling", "--inbox", $Inbox)
if ($Out) { $workerArgs += @("--out", $Out) }
if ($Interval -gt 0) { $workerArgs += @("--interval", "$Interval") }
if ($Once) {
    & krx @workerArgs --once
    exit $LASTEXITCODE
}

$pause = 10
while ($true) {
    $started = Get-Date
    & krx @workerArgs
    $rc = $LASTEXITCODE
    if ($rc -eq 0) {
        Write-Line "INFO" "WORKER_SCRIPT" "worker stopped (rc=0); not restarting"
        exit 0
    }
    # a worker that ran for a while gets a quick restart; one that keeps failing at start-up waits longer
    if (((Get-Date) - $started).TotalMinutes -gt 10) { $pause = 10 } else { $pause = [Math]::Min($pause * 2, 600) }
    Write-Line "WARNING" "WORKER_SCRIPT" "worker exited rc=$rc; restarting in $pause s"
    Start-Sleep -Seconds $pause
}
