"""A real one-node Slurm cluster on 127.0.0.1 for the tests (Debian's slurm-wlm + munge).

Used by tests/test_slurm.py only (kept beside it so that the test module stays readable; the
recipe is ../shared/slurm-localhost.md). :class:`SlurmCluster` installs the packages when they
are missing (as root, with apt), starts ``munged`` (unless one already answers), ``slurmctld``
and ``slurmd`` with their own state dir, ports and ``SLURM_CONF``, and stops what it started.

    cluster = SlurmCluster(tmp_dir).start(gres=False)   # CPU-only cluster, partition 'cpu'
    cluster.restart(gres=True)                           # the node pretends to have 2 GPUs
    cluster.env                                          # SLURM_CONF for subprocesses
    cluster.stop()

``unavailable()`` says why a cluster cannot be had here (no Slurm and no root/apt), or None.
"""
import os
import os.path as osp
import random
import shutil
import socket
import subprocess
import time

PACKAGES = ['slurmctld', 'slurmd', 'slurm-client', 'munge']
BINARIES = ['/usr/sbin/slurmctld', '/usr/sbin/slurmd', '/usr/sbin/munged']
PARTITION = 'cpu'
CPUS = 2
# Slurm holds a requeued job for this (+1 s) so that its old instance has ended before the new
# one starts (the default, 120 s, made the requeue tests wait; a restart forced earlier with
# `scontrol update StartTime=now` fails with 'Job credential revoked')
CRED_EXPIRE = 20
# Job ids start at a random number: the launchers derive MASTER_PORT from the job and step ids,
# so two test clusters on one machine (two test sessions at once) must not both run job 1
FIRST_JOB_IDS = (1000, 1_000_000)

CONF = """ClusterName=mmtlalign-ci
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
KillWait=30
AuthInfo=cred_expire={cred_expire}
FirstJobId={first_job_id}
{gres_types}NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 {gres}State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def have_slurm():
    return all(osp.exists(b) for b in BINARIES) and shutil.which('srun') is not None


def unavailable():
    """Why no cluster can be started here, or None."""
    if have_slurm():
        return None if os.geteuid() == 0 else 'the Slurm daemons need root here'
    if os.geteuid() != 0 or shutil.which('apt-get') is None:
        return 'Slurm is not installed and installing it needs root and apt-get'
    return None


def install():
    """apt-get install the packages (about 15 s); raises with apt's output on failure."""
    if have_slurm():
        return
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    for cmd in (['apt-get', 'update', '-qq'],
                ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *PACKAGES]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f'{" ".join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}')


class SlurmCluster:
    def __init__(self, root):
        self.root = root
        self.host = socket.gethostname().split('.')[0]
        self.gres = None
        self.started_munged = False
        self.conf = osp.join(root, 'slurm.conf')
        self.env = dict(SLURM_CONF=self.conf)

    # -- munge --
    def _munge_ok(self):
        r = subprocess.run('munge -n | unmunge', shell=True, capture_output=True)
        return r.returncode == 0

    def _start_munged(self):
        if self._munge_ok():
            return
        for d in ('/run/munge', '/var/log/munge', '/var/lib/munge'):
            os.makedirs(d, exist_ok=True)
            shutil.chown(d, 'munge', 'munge')
        subprocess.run(['runuser', '-u', 'munge', '--', '/usr/sbin/munged'], check=True)
        self.started_munged = True
        for _ in range(50):
            if self._munge_ok():
                return
            time.sleep(0.1)
        raise RuntimeError('munged started but `munge -n | unmunge` keeps failing')

    # -- slurm --
    def _write_conf(self, gres):
        d = self.root
        for sub in ('state', 'spool', 'log', 'dev'):
            os.makedirs(osp.join(d, sub), exist_ok=True)
        gres_types, gres_node = '', ''
        if gres:
            gres_types, gres_node = 'GresTypes=gpu\n', f'Gres=gpu:{gres} '
            files = []
            for i in range(gres):
                dev = osp.join(d, 'dev', f'gpu{i}')
                if not osp.exists(dev):
                    os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # like /dev/null
                files.append(dev)
            with open(osp.join(d, 'gres.conf'), 'w') as f:
                f.write(f'NodeName={self.host} Name=gpu File={d}/dev/gpu[0-{gres - 1}]\n')
        with open(self.conf, 'w') as f:
            f.write(CONF.format(host=self.host, dir=d, ctld_port=_port(), d_port=_port(),
                                gres_types=gres_types, gres=gres_node, cpus=CPUS,
                                cred_expire=CRED_EXPIRE,
                                first_job_id=random.randrange(*FIRST_JOB_IDS),
                                partition=PARTITION))

    def start(self, gres=0):
        """Start a fresh cluster; ``gres``: the number of (fake) GPUs of the node, 0 for none."""
        install()
        self._start_munged()
        shutil.rmtree(osp.join(self.root, 'state'), ignore_errors=True)  # no drained node
        self._write_conf(gres)
        env = dict(os.environ, **self.env)
        for daemon in ('/usr/sbin/slurmctld', '/usr/sbin/slurmd'):
            subprocess.run([daemon, '-f', self.conf], env=env, check=True, timeout=60)
        self.gres = gres
        deadline = time.time() + 60
        while time.time() < deadline:
            r = subprocess.run(['sinfo', '-h', '-o', '%T'], env=env, capture_output=True,
                               text=True)
            if r.returncode == 0 and r.stdout.strip() == 'idle':
                return self
            time.sleep(0.2)
        raise RuntimeError(f'slurm node not idle after 60 s (sinfo: {r.stdout}{r.stderr}); '
                           f'logs in {self.root}/log')

    def restart(self, gres=0):
        if self.gres == gres:
            return self
        self.stop(munge=False)
        return self.start(gres)

    def _kill(self, pidfile):
        if not osp.isfile(pidfile):
            return
        try:
            pid = int(open(pidfile).read().strip())
            os.kill(pid, 15)
        except (ValueError, ProcessLookupError):
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, 9)

    def stop(self, munge=True):
        # jobs first (their processes are children of slurmd's slurmstepd)
        subprocess.run(['scancel', '--full', '-u', 'root'], env=dict(os.environ, **self.env),
                       capture_output=True, timeout=30)
        time.sleep(0.5)
        self._kill(osp.join(self.root, 'slurmd.pid'))
        self._kill(osp.join(self.root, 'slurmctld.pid'))
        self.gres = None
        if munge and self.started_munged:
            self._kill('/run/munge/munged.pid')
            self.started_munged = False

    # -- helpers for tests --
    def run(self, args, **kw):
        env = dict(os.environ, **self.env, **kw.pop('env', {}))
        return subprocess.run(args, env=env, capture_output=True, text=True, **kw)

    def wait_idle(self, timeout=120):
        """Until no job is in the queue."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.run(['squeue', '-h', '-o', '%i'])
            if r.returncode == 0 and not r.stdout.strip():
                return
            time.sleep(0.3)
        raise AssertionError(f'jobs still queued after {timeout} s: {r.stdout}')


def wait_for(predicate, timeout, what, interval=0.1):
    """``predicate()``'s first truthy value, polled every ``interval`` s for ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f'timed out after {timeout} s waiting for {what}')
