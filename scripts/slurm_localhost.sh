#!/usr/bin/env bash
# A single-node SLURM cluster on this machine (munged + slurmctld + slurmd, all on 127.0.0.1), for trying the
# SLURM workflow profile without a real cluster (tests/test_slurm.py uses it):
#
#   scripts/slurm_localhost.sh install         # apt-get install slurm-wlm munge (Debian / Ubuntu, as root)
#   scripts/slurm_localhost.sh start [DIR]     # writes DIR/slurm.conf, starts the daemons; prints `export SLURM_CONF=...`
#   scripts/slurm_localhost.sh stop [DIR]      # stops the daemons started from DIR
#
# DIR (default $PGD_SLURM_DIR, else results/slurm in the checkout) holds the configuration, the munge key, the daemons' state, pid
# files and logs; client commands (sbatch, squeue, scontrol, scancel) find the cluster through
# SLURM_CONF=DIR/slurm.conf. Outside DIR, nothing under /etc: munged's socket at its default path (slurmd needs it
# before it has any configuration; a munged already answering there is used as it is) and slurmd's configless link
# /run/slurm/conf, through which job steps find the cluster (the executor plugin drops SLURM_CONF before srun), so
# one such cluster per machine. Run as root (slurmd starts jobs as their users).
# Ports: $PGD_SLURM_CTLD_PORT (6817) and $PGD_SLURM_SLURMD_PORT (6818).
#
# The node is this machine as `slurmd -C` sees it (CPUs, sockets, cores; 95% of RealMemory) plus
# PGD_SLURM_FAKE_GPUS (default 2) GPUs that are not there: gres/gpu entries backed by empty files in DIR, so that
# sbatch --gpus=N is accepted and shows as TresPerJob in `scontrol show job`; a job that wants CUDA finds none.
# Partitions `gpu` (default) and `cpu`, the names workflow/profiles/slurm uses. No slurmdbd
# (accounting_storage/none, so `sacct` does not answer): job states come from slurmctld (squeue --states=all
# keeps finished jobs MinJobAge=300 s), and jobcomp/filetxt writes one line per finished job to DIR/jobcomp.txt.
set -euo pipefail

cmd=${1:-}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR=${2:-${PGD_SLURM_DIR:-$ROOT/results/slurm}}
CTLD_PORT=${PGD_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${PGD_SLURM_SLURMD_PORT:-6818}
FAKE_GPUS=${PGD_SLURM_FAKE_GPUS:-2}
NODE=localhost
MUNGE_SOCKET=/run/munge/munge.socket.2

die() { echo "slurm_localhost: $*" >&2; exit 1; }

need_tools() {
    local missing=()
    for tool in munged slurmctld slurmd sbatch squeue scontrol sinfo; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    (( ${#missing[@]} == 0 )) || die "missing ${missing[*]}: run '$0 install' (apt-get install slurm-wlm munge)"
    [[ $(id -u) == 0 ]] || die "run as root: slurmd must be able to start jobs as any user"
}

write_conf() {
    # the machine's own hardware line (CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=..
    # RealMemory=..), renamed to the node this cluster knows
    local hw
    hw=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //')
    # leave the OS some memory: a job that asks for all of RealMemory would never be scheduled
    local mem
    mem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hw")
    hw=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$(( mem * 95 / 100 ))/" <<<"$hw")
    local gres=""
    if (( FAKE_GPUS > 0 )); then
        gres="Gres=gpu:$FAKE_GPUS"
        : >"$DIR/gres.conf"
        for (( i = 0; i < FAKE_GPUS; i++ )); do
            : >"$DIR/fake-gpu$i"     # gres/gpu wants one distinct file per device
            echo "NodeName=$NODE Name=gpu File=$DIR/fake-gpu$i" >>"$DIR/gres.conf"
        done
    fi
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=pgd-localhost
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups (containers, CI): processes are tracked by their parent chain
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
# finished jobs stay visible to squeue / scontrol for 5 minutes (the executor plugin's squeue status query)
MinJobAge=300
ReturnToService=2
# configless: slurmd fetches this file from slurmctld and links /run/slurm/conf to its copy. The executor plugin's
# job step drops every SLURM_* variable (SLURM_CONF included) before it calls srun, which then finds the cluster
# there, as on a real node without /etc/slurm/slurm.conf
SlurmctldParameters=enable_configless
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
MailProg=/bin/true
# a cancelled job dies at once: scancel sends SIGTERM, then SIGKILL after KillWait seconds
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$NODE NodeAddr=127.0.0.1 $hw $gres State=UNKNOWN
# the partitions that workflow/profiles/slurm/config.yaml names, both on this one node
PartitionName=gpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
}

start() {
    need_tools
    if [[ -e "$DIR/slurmctld.pid" ]] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
        die "a cluster from $DIR is running already ('$0 stop $DIR' first)"
    fi
    # job steps find their cluster through /run/slurm/conf (below): one such cluster per machine
    if [[ -L /run/slurm/conf && -e /run/slurm/conf ]]; then
        local other
        other=$(readlink /run/slurm/conf)
        other=${other%/spool/*}
        [[ "$other" == "$DIR" ]] || die "another cluster, from $other, is running on this machine ('$0 stop $other' first)"
    fi
    mkdir -p "$DIR"/{munge,state,"spool/$NODE",log}
    # a start that fails half-way stops what it had started
    trap 'stop' ERR
    chmod 700 "$DIR/munge"
    write_conf
    # munge at its default socket (slurmd reads it before it has fetched slurm.conf): a munged that already answers
    # there is used as it is, otherwise one with a key of this cluster's own is started
    if [[ -S "$MUNGE_SOCKET" ]] && munge -n -S "$MUNGE_SOCKET" </dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
        echo "slurm_localhost: using the munged already running at $MUNGE_SOCKET"
    else
        [[ -s "$DIR/munge/munge.key" ]] || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
        mkdir -p "$(dirname "$MUNGE_SOCKET")"
        munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
            --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
    fi
    export SLURM_CONF="$DIR/slurm.conf"
    slurmctld -f "$SLURM_CONF" -i
    slurmd --conf-server "127.0.0.1:$CTLD_PORT" -N "$NODE"
    # wait until the node registers and is idle
    local state=""
    for _ in $(seq 1 60); do
        state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        [[ "$state" == idle* ]] && break
        sleep 1
    done
    if [[ "$state" != idle* ]]; then
        tail -n 20 "$DIR"/log/*.log >&2 || true
        stop
        die "node $NODE did not come up (state '${state:-none}'); logs above"
    fi
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop_pid() {
    local pidfile=$1 name=$2
    [[ -e "$pidfile" ]] || return 0
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && { echo "slurm_localhost: $name ($pid) ignored SIGTERM; killing" >&2; kill -9 "$pid"; }
    fi
    rm -f "$pidfile"
}

stop() {
    [[ -d "$DIR" ]] || { echo "slurm_localhost: no cluster directory $DIR"; return 0; }
    if [[ -e "$DIR/slurmctld.pid" ]] && command -v scancel >/dev/null; then
        SLURM_CONF="$DIR/slurm.conf" scancel --quiet --full --user=root 2>/dev/null || true
    fi
    stop_pid "$DIR/slurmd.pid" slurmd
    stop_pid "$DIR/slurmctld.pid" slurmctld
    stop_pid "$DIR/munge/munged.pid" munged
    # slurmd's configless link, if it points at this cluster
    if [[ -L /run/slurm/conf && $(readlink /run/slurm/conf) == "$DIR"/* ]]; then rm -f /run/slurm/conf; fi
}

install() {
    [[ $(id -u) == 0 ]] || die "installing packages needs root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # no recommends: they pull in mail servers and documentation
    apt-get install -y -q --no-install-recommends slurm-wlm munge
}

case "$cmd" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install | start [DIR] | stop [DIR]" >&2; exit 2 ;;
esac
