#!/usr/bin/env bash
# A single-node SLURM cluster on localhost (Debian's slurm-wlm and munge), for testing
# `robench bench run --executor slurm` for real:
#
#   scripts/local-slurm.sh install   # apt-get install slurm-wlm munge (root)
#   scripts/local-slurm.sh start     # munged, slurmctld, slurmd; waits until the node is idle
#   scripts/local-slurm.sh status
#   scripts/local-slurm.sh stop
#
# Its state (configuration, spool, logs) lives in $SLURM_LOCAL (default /tmp/robench-slurm),
# never in /etc/slurm. Accounting is off (no slurmdbd): submitit then reads job states from
# squeue and its own result files. Exits non-zero with the reason when a daemon cannot start
# (e.g. a sandbox without the privileges slurmd needs).
set -euo pipefail

STATE=${SLURM_LOCAL:-/tmp/robench-slurm}
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
}

configure() {
    mkdir -p "$STATE"/{spool,ctld,log,run}
    local host cpus memory
    host=$(hostname -s)
    cpus=$(nproc)
    memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat > "$CONF" <<EOF
ClusterName=robench-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6917
SlurmdPort=6918
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
Waittime=0
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    install
    configure
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    mkdir -p /run/munge && chown munge:munge /run/munge
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged --force
    pgrep -x slurmctld >/dev/null || slurmctld -f "$CONF"
    pgrep -x slurmd >/dev/null || slurmd -f "$CONF"
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "local SLURM is up: SLURM_CONF=$CONF ($(sinfo -h -o '%P %D %T %c CPUs'))"
            return 0
        fi
        sleep 1
    done
    echo "local SLURM did not come up; last log lines:" >&2
    tail -n 5 "$STATE"/log/*.log >&2 || true
    return 1
}

stop() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    for _ in $(seq 20); do pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break; sleep 0.5; done
    echo "local SLURM stopped"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) sinfo; squeue ;;
    *) echo "usage: $0 install|start|status|stop" >&2; exit 2 ;;
esac
