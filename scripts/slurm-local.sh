#!/usr/bin/env bash
# slurm-local.sh - a real single-node Slurm cluster on 127.0.0.1, for tests and trying
# `circuitry submit` on one machine. It installs nothing: Debian's slurmctld, slurmd,
# slurm-client and munge must be installed (.ci/run does it with apt).
#
#   scripts/slurm-local.sh start [--stop-with PID]
#         wipe DIR (only if this script made it), write a private munge key and
#         slurm.conf, start munged + slurmctld + slurmd, wait until the node is idle.
#         --stop-with PID: also start a watchdog that stops the cluster once process
#         PID has exited (tests use it so no daemon outlives the test binary).
#   scripts/slurm-local.sh stop      cancel every job, stop the daemons (by saved PID)
#   scripts/slurm-local.sh status    the daemons' PIDs and sinfo; exit 1 if one is down
#   scripts/slurm-local.sh env       print `export SLURM_CONF=...` (eval it)
#
# Client commands (sbatch, squeue, scontrol, scancel, sinfo) need SLURM_CONF:
#   eval "$(scripts/slurm-local.sh env)"
#
# Must run as root (slurmd starts jobs as the submitting user). No systemd and no
# cgroups: proctrack/linuxproc + task/none. Everything (config, state, logs, the munge
# key and socket) lives under DIR; nothing is written to /etc.
#
# Environment:
#   SLURM_LOCAL_DIR            state, config and logs    [target/slurm-local]
#   SLURM_LOCAL_CTLD_PORT      slurmctld port            [6817]
#   SLURM_LOCAL_SLURMD_PORT    slurmd port               [6818]
#   SLURM_LOCAL_CPUS           CPUs of the node          [nproc]
#   SLURM_LOCAL_MEM_MB         RealMemory in MB          [MemTotal - 512]
#   SLURM_LOCAL_START_TIMEOUT  seconds to wait for idle  [60]
#
# The configuration always has DependencyParameters=kill_invalid_depend (a job whose
# afterok dependency failed is cancelled instead of pending forever) and
# SchedulerParameters=batch_sched_delay=0 (no 3 s wait between waves of jobs), and
# keeps finished jobs visible to squeue/scontrol for an hour (there is no sacct).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${SLURM_LOCAL_DIR:-$ROOT/target/slurm-local}
CONF=$DIR/slurm.conf
MUNGE_DIR=$DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
NODE=$(hostname -s)
MARKER=$DIR/.made-by-slurm-local
DAEMONS=(munged slurmctld slurmd)

say() { printf 'slurm-local: %s\n' "$*" >&2; }
fail() {
    say "error: $*"
    exit 1
}

pid_file() {
    case $1 in
        munged) echo "$MUNGE_DIR/munged.pid" ;;
        *) echo "$DIR/$1.pid" ;;
    esac
}

# True while process $1 exists and is not a zombie (PID 1 of a container may be slow
# to reap the daemons).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# The PID of daemon $1 if it runs (its PID file names a live process of that name).
running_pid() {
    local file pid
    file=$(pid_file "$1")
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]] && alive "$pid"; then
        echo "$pid"
    fi
    return 0
}

# A start that failed: show the daemons' logs, stop what was started, exit 1.
fail_start() {
    show_logs
    cmd_stop
    fail "$@"
}

show_logs() {
    local f
    for f in "$MUNGE_DIR/munged.log" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; do
        if [[ -f $f ]]; then
            echo "--- last lines of $f" >&2
            tail -n 30 "$f" >&2
        fi
    done
}

check_installed() {
    local missing=() c
    for c in munged munge unmunge slurmctld slurmd sbatch squeue scontrol scancel sinfo; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    ((${#missing[@]} == 0)) && return 0
    fail "not installed: ${missing[*]}; install them with
    apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
}

write_conf() {
    local cpus mem
    cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
    mem=${SLURM_LOCAL_MEM_MB:-$(($(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 512))}
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: one node on 127.0.0.1, no cgroups, no accounting.
ClusterName=circuitry-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
DependencyParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=3600
MaxArraySize=10001
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
MailProg=/bin/true
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_watchdog() {
    local watched=$1
    [[ $watched =~ ^[0-9]+$ ]] || fail "--stop-with needs a process id, got '$watched'"
    # Detached from our stdio so that the caller is not kept waiting on the pipe.
    setsid bash -c '
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        SLURM_LOCAL_DIR="$2" "$3" stop
    ' watchdog "$watched" "$DIR" "$ROOT/scripts/slurm-local.sh" \
        </dev/null >>"$DIR/log/watchdog.log" 2>&1 &
    echo $! >"$DIR/watchdog.pid"
    say "watchdog (pid $!) stops the cluster when process $watched exits"
}

cmd_start() {
    local stop_with=
    if [[ ${1:-} == --stop-with ]]; then
        stop_with=${2:-}
        [[ -n $stop_with ]] || fail "--stop-with needs a process id"
    elif [[ -n ${1:-} ]]; then
        fail "unknown argument '$1'; usage: $0 start [--stop-with PID]"
    fi
    [[ $(id -u) -eq 0 ]] || fail "must run as root (slurmd runs jobs as the submitting user)"
    check_installed
    local t0=$SECONDS d
    for d in "${DAEMONS[@]}"; do
        if [[ -n $(running_pid "$d") ]]; then
            say "a cluster from an earlier start is running in $DIR; stopping it first"
            cmd_stop
            break
        fi
    done
    if [[ -e $DIR ]]; then
        [[ -e $MARKER ]] || fail "$DIR exists and was not made by this script; refusing to delete it (set SLURM_LOCAL_DIR to another directory)"
        rm -rf "$DIR"
    fi
    local port
    for port in "$CTLD_PORT" "$SLURMD_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            fail "port $port on 127.0.0.1 is in use (another Slurm?); stop it, or set SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_SLURMD_PORT"
        fi
    done
    mkdir -p "$DIR"/state "$DIR"/spool "$DIR"/log "$MUNGE_DIR"
    touch "$MARKER"
    chmod 755 "$DIR" "$MUNGE_DIR" # munged wants its socket directory world-searchable

    # munge: a private key and socket.
    head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key"
    chmod 400 "$MUNGE_DIR/munge.key"
    munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$(pid_file munged)" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" || fail_start "munged did not start"
    local i ok=0
    for ((i = 0; i < 50; i++)); do
        if munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 0.2
    done
    ((ok)) || fail_start "munge credentials do not round-trip through $MUNGE_SOCKET"

    write_conf
    export SLURM_CONF=$CONF
    slurmctld -f "$CONF" >>"$DIR/log/start.out" 2>&1 || fail_start "slurmctld did not start"
    slurmd -f "$CONF" -N "$NODE" >>"$DIR/log/start.out" 2>&1 || fail_start "slurmd did not start"
    local timeout=${SLURM_LOCAL_START_TIMEOUT:-60} state=
    for ((i = 0; i < timeout * 4; i++)); do
        state=$(sinfo -h -n "$NODE" -o '%t' 2>/dev/null || true)
        [[ $state == idle ]] && break
        sleep 0.25
    done
    if [[ $state != idle ]]; then
        sinfo -R >&2 || true
        fail_start "node $NODE is not idle after ${timeout} s (state '${state:-unknown}')"
    fi
    for d in "${DAEMONS[@]}"; do
        [[ -n $(running_pid "$d") ]] || fail_start "$d is not running"
    done
    [[ -z $stop_with ]] || start_watchdog "$stop_with"
    say "up in $((SECONDS - t0)) s: node $NODE idle; munged $(running_pid munged), slurmctld $(running_pid slurmctld), slurmd $(running_pid slurmd)"
    say "use it with: export SLURM_CONF=$CONF"
}

cmd_stop() {
    export SLURM_CONF=$CONF
    local i pid d
    if [[ -n $(running_pid slurmctld) ]]; then
        scancel --quiet --partition=debug 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -z $(squeue -h -t running,completing -o %i 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    for d in slurmd slurmctld munged; do
        pid=$(running_pid "$d")
        if [[ -n $pid ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                alive "$pid" || break
                sleep 0.2
            done
            if alive "$pid"; then
                say "$d (pid $pid) ignored SIGTERM for 20 s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            say "stopped $d (pid $pid)"
        fi
        rm -f "$(pid_file "$d")"
    done
    # Job step daemons of this cluster that outlived slurmd carry our SLURM_CONF.
    for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
        if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$CONF"; then
            say "killing leftover slurmstepd (pid $pid)"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    # A watchdog of this cluster that has not fired yet is no longer needed.
    if [[ -s $DIR/watchdog.pid ]]; then
        pid=$(<"$DIR/watchdog.pid")
        rm -f "$DIR/watchdog.pid"
        if [[ $pid =~ ^[0-9]+$ && $pid != "$$" && $pid != "$PPID" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    fi
}

cmd_status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        pid=$(running_pid "$d")
        echo "$d: ${pid:-not running}"
        [[ -n $pid ]] || rc=1
    done
    if ((rc == 0)); then
        SLURM_CONF=$CONF sinfo
    fi
    return $rc
}

case ${1:-} in
    start)
        shift
        cmd_start "$@"
        ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *)
        echo "usage: $0 start [--stop-with PID] | stop | status | env" >&2
        exit 2
        ;;
esac
