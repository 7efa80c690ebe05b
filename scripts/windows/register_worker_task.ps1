<#
.SYNOPSIS
    Register (or remove) a Task Scheduler task that runs the krx worker at logon and restarts it on failure.

.DESCRIPTION
    The task runs scripts\windows\run_worker.ps1 hidden, as the current user, at that user's logon, with no time
    limit. It runs "only when the user is logged on" on purpose: drive mappings (Z:) and the user's SMB
    credentials exist only in the user's session. run_worker.ps1 restarts a crashed worker itself; the task's
    restart-on-failure settings (every minute, up to 255 times) cover the script failing as a whole.

    Stop the worker:  Stop-ScheduledTask -TaskName krx-worker   (ends the process; the claim it held goes back
    to the inbox after the lease, nothing is lost). Start it:  Start-ScheduledTask -TaskName krx-worker.

.PARAMETER TaskName
    Default: krx-worker.

.PARAMETER KrxHome
    Passed to run_worker.ps1 (default: $env:KRX_HOME, else Z:\krx).

.PARAMETER Unregister
    Remove the task instead.

.EXAMPLE
    powershell -NoProfile -ExecutionPolicy Bypass -File scripts\windows\register_worker_task.ps1 -KrxHome Z:\krx
#>
[CmdletBinding()]
param(
    [string]$TaskName = "krx-worker",
    [string]$KrxHome = $(if ($env:KRX_HOME) { $env:KRX_HOME } else { "Z:\krx" }),
    [switch]$Unregister
)

$ErrorActionPreference = "Stop"

if ($Unregister) {
    Unregister-ScheduledTask -TaskName $TaskName -Confirm:$false
    Write-Host "removed task $TaskName"
    exit 0
}

$script = Join-Path $PSScriptRoot "run_worker.ps1"
if (-not (Test-Path $script)) { throw "run_worker.ps1 not found beside this script ($script)" }
$user = "$env:USERDOMAIN\$env:USERNAME"

$action = New-ScheduledTaskAction -Execute "powershell.exe" `
    -Argument "-NoProfile -ExecutionPolicy Bypass -WindowStyle Hidden -File `"$script`" -KrxHome `"$KrxHome`"" `
    -WorkingDirectory (Split-Path -Parent (Split-Path -Parent $PSScriptRoot))
$trigger = New-ScheduledTaskTrigger -AtLogOn -User $user
$settings = New-ScheduledTaskSettingsSet `
    -RestartCount 255 -RestartInterval (New-TimeSpan -Minutes 1) `
    -ExecutionTimeLimit ([TimeSpan]::Zero) `
    -MultipleInstances IgnoreNew `
    -StartWhenAvailable `
    -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries
$principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited

Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Settings $settings `
    -Principal $principal -Force `
    -Description "krx-alertor: run queued backtests from $KrxHome\reports\pending (scripts\windows\run_worker.ps1)" |
    Out-Null

Write-Host "registered task $TaskName for $user (at logon; home $KrxHome)"
Write-Host "start it now with:  Start-ScheduledTask -TaskName $TaskName"
