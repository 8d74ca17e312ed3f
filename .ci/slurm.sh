#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm end-to-end test (tests/slurm.rs).
#
#   .ci/slurm.sh start   install slurm-wlm and munge where missing, write slurm.conf for this
#                        machine, start munged (as the munge user), slurmctld and slurmd (as
#                        root), and wait until the node takes jobs
#   .ci/slurm.sh stop    stop the daemons `start` started, and nothing else
#
# Needs root or sudo. Every wait is bounded; `start` fails, saying why, when the cluster does
# not come up, and leaves the daemons it started for `stop`. A controller that already answers
# is used as it is: nothing is written or started, and `stop` stops nothing.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# What `start` started, one "name pid" a line: `stop` ends those processes by id only.
state=/run/llmeff-slurm.pids
conf=/etc/slurm/slurm.conf
# Written into the config, so a config this script did not write is never overwritten.
marker="# Written by llmeff's .ci/slurm.sh"
log_dir=/var/log/llmeff-slurm

# Runs "$@" every half second until it succeeds or `seconds` pass.
wait_for() {
  local seconds=$1
  shift
  local tries=$((seconds * 2))
  while [ "$tries" -gt 0 ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
    tries=$((tries - 1))
  done
  return 1
}

node_idle() {
  [ "$(sinfo -h -N -n "$host" -o %t 2>/dev/null)" = idle ]
}

# The pid a daemon wrote, recorded for `stop`.
record() {
  local name=$1 pidfile=$2
  if ! wait_for 10 test -s "$pidfile"; then
    echo "slurm.sh: $name wrote no pid file $pidfile" >&2
    return 1
  fi
  echo "$name $($sudo cat "$pidfile")" | $sudo tee -a "$state" >/dev/null
}

show_logs() {
  $sudo tail -n 20 "$log_dir"/*.log /var/log/munge/munged.log 2>/dev/null >&2 || true
}

start() {
  if command -v sinfo >/dev/null 2>&1 && timeout 10 scontrol ping 2>/dev/null | grep -q UP; then
    echo "slurm.sh: a Slurm controller already answers; using it"
    return 0
  fi
  if ! command -v sbatch >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 ||
    ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
      --no-install-recommends slurm-wlm munge
  fi
  host=$(hostname -s)
  # This machine's CPUs and memory, as slurmd itself sees them: a node configured with more
  # than slurmd finds is drained.
  local facts cpus memory
  facts=$(timeout 30 slurmd -C | head -n 1)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$facts")
  memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$facts")
  if [ -z "$cpus" ] || [ -z "$memory" ]; then
    echo "slurm.sh: cannot read CPUs and RealMemory from \`slurmd -C\`: $facts" >&2
    return 1
  fi
  if [ -f "$conf" ] && ! grep -qF "$marker" "$conf"; then
    echo "slurm.sh: $conf exists and was not written by this script; not touching it" >&2
    return 1
  fi
  $sudo mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$log_dir"
  # The node and controller are reached on the loopback address, so the host name need not
  # resolve. linuxproc and task/none need no cgroups (containers often have none to give).
  $sudo tee "$conf" >/dev/null <<EOF
$marker for the Slurm end-to-end test.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/llmeff-slurmctld.pid
SlurmdPidFile=/run/llmeff-slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  $sudo rm -f "$state"
  $sudo touch "$state"

  if ! timeout 10 munge -n 2>/dev/null | timeout 10 unmunge >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
      $sudo mungekey --create --keyfile=/etc/munge/munge.key
      $sudo chown munge:munge /etc/munge/munge.key
      $sudo chmod 0400 /etc/munge/munge.key
    fi
    $sudo install -d -o munge -g munge -m 0755 /run/munge
    $sudo install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    $sudo runuser -u munge -- /usr/sbin/munged
    record munged /run/munge/munged.pid
    if ! wait_for 10 sh -c 'munge -n | unmunge'; then
      echo "slurm.sh: munged does not answer" >&2
      show_logs
      return 1
    fi
  fi
  # -c: start without the state (jobs, node states) an earlier cluster saved.
  $sudo timeout 30 /usr/sbin/slurmctld -c
  record slurmctld /run/llmeff-slurmctld.pid
  $sudo timeout 30 /usr/sbin/slurmd
  record slurmd /run/llmeff-slurmd.pid
  if ! wait_for 60 node_idle; then
    # A node seen down before (an earlier cluster's state) waits for this.
    $sudo scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
    if ! wait_for 30 node_idle; then
      echo "slurm.sh: node $host did not become idle:" >&2
      sinfo -N -l >&2 || true
      show_logs
      return 1
    fi
  fi
  echo "slurm.sh: one-node cluster up: $host, $cpus CPUs, $memory MiB"
}

stop() {
  [ -f "$state" ] || return 0
  # slurmd first, so no job starts while the controller goes; then the controller, then
  # munge, which both authenticate with.
  for name in slurmd slurmctld munged; do
    local pid
    pid=$(awk -v n="$name" '$1 == n { print $2 }' "$state")
    [ -n "$pid" ] || continue
    $sudo kill -TERM "$pid" 2>/dev/null || continue
    if ! wait_for 15 sh -c "! kill -0 $pid"; then
      echo "slurm.sh: $name (pid $pid) did not stop in 15 s; killing it" >&2
      $sudo kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  $sudo rm -f "$state"
  echo "slurm.sh: stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
  echo "usage: $0 start|stop" >&2
  exit 2
  ;;
esac
