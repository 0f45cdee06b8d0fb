#!/usr/bin/env bash
# A real single-node SLURM cluster for the integration test (tests/test_slurm.py), as root,
# without systemd: Debian's slurm-wlm + munge, one node with a CPU partition and a GPU
# partition. By default the node is what this machine is: its CPU count and memory, and no
# GPU (the GPU partition holds the same CPU-only node, as on a small cluster that names a
# `gpu` partition it cannot yet fill). NODE_GPUS=1 advertises one `gpu` GRES whose device
# file is /dev/null (gres.conf: AutoDetect=off; slurmd 22.05 ignores a GPU line with only a Count),
# so `--gpus=1` jobs are scheduled as on a real cluster (nothing constrains devices: no
# cgroup plugins).
#
#   tests/slurm/cluster.sh start DIR   install what is missing, write DIR/slurm.conf, start
#                                      munged (as the munge user), slurmctld and slurmd, wait
#                                      until sinfo shows the node idle; PIDs in DIR/*.pid
#   tests/slurm/cluster.sh stop DIR    cancel remaining jobs, stop the three daemons by PID
#
# DIR: an empty directory named chexdino-slurm* that the munge user can reach, e.g.
# `mktemp -d /tmp/chexdino-slurm.XXXXXX` (the name marks /etc/slurm/slurm.conf links as
# ours). Settings (environment): CPU_PARTITION (cpu), GPU_PARTITION (gpu), SLURMCTLD_PORT /
# SLURMD_PORT (free ports are picked), NODE_CPUS (this machine's, `nproc`), NODE_MEM_MB (this
# machine's MemTotal), NODE_GPUS (0 or 1; 0). The node's CPUs and memory are declared, not detected
# (SlurmdParameters=config_overrides), so other sizes can be tried on any machine.
#
# Client commands find the cluster through SLURM_CONF=DIR/slurm.conf. Inside jobs the SLURM
# executor plugin starts `srun` with every SLURM_* variable removed, so srun needs the default
# path too: while the cluster runs, /etc/slurm/slurm.conf is a symlink to DIR/slurm.conf
# (created only where no slurm.conf exists, removed by `stop`; a second test cluster on the
# same machine waits for the first to stop).
set -euo pipefail

LOCK=/run/lock/chexdino-slurm-test.lock
SYSTEM_CONF=/etc/slurm/slurm.conf

die() { echo "cluster.sh: $*" >&2; exit 1; }

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    if ((${#missing[@]})); then
        echo "cluster.sh: installing ${missing[*]} (slurm-wlm, munge)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    fi
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what (logs in $DIR/log)"
        sleep 0.25
    done
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Client commands get a short timeout: against a dead controller they retry for minutes.
ctld_up() { pid_alive "$DIR/slurmctld.pid" && timeout 5 scontrol ping | grep -q UP; }
node_idle() { [[ $(timeout 5 sinfo -h -N -o %t | sort -u) == idle ]]; }  # one line a partition

start() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    install_packages
    mkdir -p "$DIR"
    # A start that fails half-way stops what it started and gives the config link back.
    trap 'echo "cluster.sh: start failed; stopping what was started" >&2; stop' EXIT
    DIR=$(cd "$DIR" && pwd)
    chmod 755 "$DIR"
    mkdir -p "$DIR/log" "$DIR/state" "$DIR/spool" "$DIR/munge"
    chown munge:munge "$DIR/munge"
    chmod 755 "$DIR/munge"  # munged insists others may reach its socket

    # One test cluster per machine owns /etc/slurm/slurm.conf (see above). The lock is held
    # while a cluster starts; a link whose cluster is not running (killed test) is taken over,
    # a running one is waited for, a real file is never touched.
    local target waited=0
    mkdir -p "$(dirname "$LOCK")"
    exec 9>"$LOCK"
    flock -w 900 9 || die "could not take $LOCK"
    while [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; do
        [[ -L $SYSTEM_CONF ]] || die "$SYSTEM_CONF exists (a real SLURM installation?)"
        target=$(readlink "$SYSTEM_CONF")
        [[ $target == */chexdino-slurm*/slurm.conf ]] \
            || die "$SYSTEM_CONF links to $target; not touching it"
        if ! pid_alive "$(dirname "$target")/slurmctld.pid"; then
            rm -f "$SYSTEM_CONF"  # left behind by a test cluster that was killed
            break
        fi
        ((waited < 900)) || die "another test cluster ($target) still runs after 15 min"
        ((waited == 0)) && echo "cluster.sh: waiting for another test cluster ($target)" >&2
        flock -u 9
        sleep 5
        waited=$((waited + 5))
        flock -w 900 9 || die "could not take $LOCK"
    done
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$DIR/slurm.conf" "$SYSTEM_CONF"

    local host ctld_port slurmd_port cpu_part gpu_part cpus mem gpus node_gres=""
    host=$(hostname -s)
    ctld_port=${SLURMCTLD_PORT:-$(free_port)}
    slurmd_port=${SLURMD_PORT:-$(free_port)}
    cpu_part=${CPU_PARTITION:-cpu}
    gpu_part=${GPU_PARTITION:-gpu}
    cpus=${NODE_CPUS:-$(nproc --all)}
    mem=${NODE_MEM_MB:-$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)}
    gpus=${NODE_GPUS:-0}
    [[ $gpus == [01] ]] || die "NODE_GPUS must be 0 or 1 (one /dev/null device), not $gpus"
    if ((gpus > 0)); then node_gres=" Gres=gpu:1"; fi

    # munge: its own key and socket, so a system munged (if any) is left alone.
    runuser -u munge -- mungekey --create --keyfile="$DIR/munge/munge.key"
    # (Daemons get 9>&-: they must not hold the start lock.)
    runuser -u munge -- munged --socket="$DIR/munge/munge.socket" \
        --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" 9>&-
    wait_for 20 munged test -S "$DIR/munge/munge.socket"
    cp "$DIR/munge/munged.pid" "$DIR/munged.pid"

    cat >"$DIR/slurm.conf" <<EOF
# Generated by tests/slurm/cluster.sh: single-node test cluster.
ClusterName=chexdino-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
# No slurmdbd: sacct cannot answer, so Snakemake's SLURM plugin polls squeue, which only
# knows a finished job for MinJobAge seconds (keep it >= 3x the plugin's
# slurm-init-seconds-before-status-checks).
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# One line per finished job (partition, state, TRES): what the test reads back.
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$node_gres State=UNKNOWN
PartitionName=$cpu_part Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=$gpu_part Nodes=$host MaxTime=INFINITE State=UP
EOF
    # GPUs to schedule, nothing to detect or bind (a GPU line without File is ignored).
    {
        echo "AutoDetect=off"
        if ((gpus > 0)); then echo "NodeName=$host Name=gpu File=/dev/null"; fi
    } >"$DIR/gres.conf"
    export SLURM_CONF=$DIR/slurm.conf

    slurmctld -f "$SLURM_CONF" -i 9>&-
    wait_for 30 "slurmctld to answer" ctld_up
    slurmd -f "$SLURM_CONF" -N "$host" 9>&-
    wait_for 30 slurmd pid_alive "$DIR/slurmd.pid"
    wait_for 60 "the node to be idle (sinfo)" node_idle
    ctld_up || die "slurmctld stopped"
    trap - EXIT
    exec 9>&-  # release the start lock
    echo "SLURM_CONF=$SLURM_CONF"
}

stop_pid() {  # stop_pid PIDFILE: TERM, then KILL after 10 s
    local file=$1 pid
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    DIR=$(cd "$DIR" && pwd)
    export SLURM_CONF=$DIR/slurm.conf
    if pid_alive "$DIR/slurmctld.pid"; then
        timeout 10 scancel --quiet --user=root || true
        for ((i = 0; i < 40; i++)); do
            [[ -z $(timeout 5 squeue -h -t running,completing,pending) ]] && break
            sleep 0.25
        done
    fi
    stop_pid "$DIR/slurmd.pid"
    stop_pid "$DIR/slurmctld.pid"
    stop_pid "$DIR/munged.pid"
    if [[ $(readlink "$SYSTEM_CONF" 2>/dev/null) == "$DIR/slurm.conf" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
}

[[ $# == 2 ]] || die "usage: $0 start|stop DIR"
DIR=$2
case $1 in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop DIR" ;;
esac
