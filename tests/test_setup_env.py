"""tools/setup_env.sh on GPU machines, without a GPU: its CUDA decisions (``--print-plan``, and
the small functions it is made of) driven by faked ``nvidia-smi``, ``nvcc`` and torch builds.

A fake venv python answers the script's torch probe with the torch version, CUDA version,
GPU visibility, arch flags and CUDA_HOME given in ``FAKE_TORCH``; a fake ``nvidia-smi`` lists
``FAKE_GPUS`` GPUs with driver ``FAKE_DRIVER``; fake CUDA toolkits hold an ``nvcc`` that
reports its release (and its TOP under ``--dryrun``, as the real one does). PATH holds only
the fakes and /usr/bin:/bin, so the machine's own CUDA tools are out of sight.

The lock (requirements/lock.txt, every package's SHA-256 hashes): it covers every pin at its
version, and a real pip without network refuses a tampered wheel from a wheelhouse.
"""
import os
import os.path as osp
import re
import subprocess

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPT = osp.join(ROOT, 'tools', 'setup_env.sh')


def pin(name):
    with open(osp.join(ROOT, 'requirements', 'pins.txt')) as f:
        for line in f:
            if line.startswith(f'{name}=='):
                return line.strip().split('==')[1]
    raise KeyError(name)


def write_exe(path, text):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('#!/bin/bash\n' + text)
    os.chmod(path, 0o755)


def make_toolkit(root, release):
    """A fake CUDA toolkit at ``root`` whose nvcc reports ``release`` (e.g. '12.6')."""
    write_exe(osp.join(root, 'bin', 'nvcc'), f'''
for a in "$@"; do
  if [[ "$a" == --dryrun ]]; then echo "#\\$ TOP={root}/bin/.."; exit 0; fi
done
echo "nvcc: NVIDIA (R) Cuda compiler driver"
echo "Cuda compilation tools, release {release}, V{release}.77"
''')
    os.makedirs(osp.join(root, 'include'), exist_ok=True)
    open(osp.join(root, 'include', 'cuda_runtime.h'), 'w').close()
    return root


@pytest.fixture
def machine(tmp_path):
    """Builds a fake machine; ``machine.plan(**env)`` runs ``--print-plan`` on it."""

    class Machine:
        bin = str(tmp_path / 'bin')
        venv = str(tmp_path / 'venv')

        def __init__(self):
            os.makedirs(self.bin)
            # the venv python answers the torch probe (stdin: the probe's source) with FAKE_TORCH
            write_exe(osp.join(self.venv, 'bin', 'python'), 'cat >/dev/null; echo "$FAKE_TORCH"\n')
            self.torch('13.0', gpu=False)

        def torch(self, cuda, gpu, arch='sm_75,sm_80,sm_86,sm_90', home='none', version=None):
            self.fake_torch = (f'{version or pin("torch")} {cuda} py311 {int(gpu)} '
                               f'{arch if cuda != "none" else "none"} {home}')

        def gpus(self, count, driver='550.54.15'):
            write_exe(osp.join(self.bin, 'nvidia-smi'), f'''
case "$1" in
  -L) for i in $(seq 0 $(({count} - 1))); do
        echo "GPU $i: NVIDIA A100-SXM4-80GB (UUID: GPU-$i)"
      done ;;
  # one line per GPU, written slowly: a reader that stops after the first line would kill
  # it with SIGPIPE (which pipefail turns into a failed set-up)
  --query-gpu=driver_version) for i in $(seq 1 {count}); do echo "{driver}"; sleep 0.05; done ;;
esac
''')

        def nvcc_on_path(self, toolkit):
            os.symlink(osp.join(toolkit, 'bin', 'nvcc'), osp.join(self.bin, 'nvcc'))

        def run(self, *args, **env):
            full = dict(PATH=f'{self.bin}:/usr/bin:/bin', HOME=str(tmp_path),
                        MMTLALIGN_VENV=self.venv, MMTLALIGN_CACHE=str(tmp_path / 'cache'),
                        FAKE_TORCH=self.fake_torch)
            full.update(env)
            return subprocess.run(['bash', SCRIPT, *args], env=full, capture_output=True,
                                  text=True, timeout=60)

        def shell(self, code, **env):
            """Run bash ``code`` with the script's functions defined (it is sourced)."""
            full = dict(PATH=f'{self.bin}:/usr/bin:/bin', HOME=str(tmp_path),
                        MMTLALIGN_VENV=self.venv, MMTLALIGN_CACHE=str(tmp_path / 'cache'),
                        FAKE_TORCH=self.fake_torch)
            full.update(env)
            return subprocess.run(['bash', '-c', f'set -euo pipefail; source {SCRIPT}; {code}'],
                                  env=full, capture_output=True, text=True, timeout=60)

        def plan(self, **env):
            proc = self.run('--print-plan', **env)
            assert proc.returncode == 0, proc.stderr
            return dict(line.split('=', 1) for line in proc.stdout.splitlines() if '=' in line)

        def refused(self, **env):
            proc = self.run('--print-plan', **env)
            assert proc.returncode != 0, proc.stdout
            assert proc.stderr.count('\n') == 1, proc.stderr  # one line naming the problem
            return proc.stderr

    return Machine()


def test_cpu_machine_keeps_the_cpu_cache_key(machine):
    plan = machine.plan()
    assert plan['FORCE_CUDA'] == '0'
    # exactly the key of the CPU wheels already cached (the same scheme as before CUDA support)
    assert plan['MMCV_CACHE_KEY'] == f'mmcv-{pin("mmcv")}_torch-{pin("torch")}_cpuops_py311'
    assert plan['TORCH_INDEX_URL'] == ''


def test_gpus_that_torch_cannot_use_stop_with_the_driver_fix(machine):
    machine.gpus(2, driver='550.54.15')
    err = machine.refused()
    assert 'nvidia-smi sees 2 GPU(s) (driver 550.54.15)' in err
    assert 'needs driver >= 580' in err
    assert 'TORCH_CUDA=cu126' in err
    # a driver too old for any build: update it
    machine.gpus(1, driver='418.40')
    assert 'update the NVIDIA driver' in machine.refused()
    # a CPU-only torch with GPUs present
    machine.gpus(1, driver='580.65')
    machine.torch('none', gpu=False)
    err = machine.refused()
    assert 'CPU-only build' in err and 'TORCH_CUDA=cu130' in err
    # knowingly CPU-only
    assert machine.plan(ALLOW_CPU_TORCH='1')['FORCE_CUDA'] == '0'


def test_gpu_build_arch_list_cuda_home_and_cache_key(machine, tmp_path):
    toolkit = make_toolkit(str(tmp_path / 'cuda-12.6'), '12.6')
    machine.nvcc_on_path(toolkit)
    machine.gpus(1)
    machine.torch('12.6', gpu=True, arch='sm_75,sm_80,sm_86,sm_90,compute_90')
    plan = machine.plan()
    assert plan['FORCE_CUDA'] == '1'
    assert plan['CUDA_HOME'] == toolkit  # resolved through the symlink on PATH
    assert plan['NVCC_CUDA_VERSION'] == '12.6'
    assert plan['TORCH_CUDA_ARCH_LIST'] == '7.5;8.0;8.6;9.0+PTX'
    default_key = plan['MMCV_CACHE_KEY']
    assert default_key == f'mmcv-{pin("mmcv")}_torch-{pin("torch")}_cu12.6_sm75-80-86-90ptx_py311'
    # the user's list is used as given, and keys the cache apart
    plan = machine.plan(TORCH_CUDA_ARCH_LIST='8.0 9.0')
    assert plan['TORCH_CUDA_ARCH_LIST'] == '8.0 9.0'
    assert plan['MMCV_CACHE_KEY'].endswith('_cu12.6_sm80-90_py311')
    # FORCE_CUDA=0 on a GPU machine: CPU ops, the CPU key
    assert machine.plan(FORCE_CUDA='0')['MMCV_CACHE_KEY'].endswith('_cpuops_py311')


def test_force_cuda_without_a_visible_gpu(machine, tmp_path):
    """A login node: no GPU, FORCE_CUDA=1; the arch list comes from the torch build (torch's
    own detection would need a device)."""
    machine.nvcc_on_path(make_toolkit(str(tmp_path / 'cuda-13.0'), '13.0'))
    machine.torch('13.0', gpu=False, arch='sm_75,sm_80,sm_86,sm_90,sm_100,sm_120')
    assert machine.plan()['FORCE_CUDA'] == '0'  # not without asking
    plan = machine.plan(FORCE_CUDA='1')
    assert plan['TORCH_CUDA_ARCH_LIST'] == '7.5;8.0;8.6;9.0;10.0;12.0'
    assert plan['MMCV_CACHE_KEY'].endswith('_cu13.0_sm75-80-86-90-100-120_py311')
    # a CPU-only torch cannot build CUDA ops
    machine.torch('none', gpu=False)
    assert 'CPU-only build' in machine.refused(FORCE_CUDA='1')


def test_nvcc_major_must_match_torch(machine, tmp_path):
    machine.nvcc_on_path(make_toolkit(str(tmp_path / 'cuda-12.6'), '12.6'))
    machine.gpus(1, driver='580.65')
    machine.torch('13.0', gpu=True)
    err = machine.refused()
    assert 'is CUDA 12.6 but torch' in err and 'built with CUDA 13.0' in err
    assert 'TORCH_CUDA=cu126' in err
    # an explicit CUDA_HOME wins over the nvcc on PATH
    other = make_toolkit(str(tmp_path / 'cuda-13.0'), '13.0')
    plan = machine.plan(CUDA_HOME=other)
    assert plan['CUDA_HOME'] == other and plan['NVCC_CUDA_VERSION'] == '13.0'


def test_cuda_home_from_a_wrapper_and_from_torch(machine, tmp_path):
    toolkit = make_toolkit(str(tmp_path / 'opt' / 'cuda-12.8'), '12.8')
    # a wrapper script outside the toolkit: nvcc itself names its TOP
    write_exe(osp.join(machine.bin, 'nvcc'), f'exec {toolkit}/bin/nvcc "$@"\n')
    machine.gpus(1)
    machine.torch('12.8', gpu=True)
    assert machine.plan()['CUDA_HOME'] == toolkit
    # no nvcc on PATH: torch's CUDA_HOME
    os.remove(osp.join(machine.bin, 'nvcc'))
    machine.torch('12.8', gpu=True, home=toolkit)
    assert machine.plan(FORCE_CUDA='1')['CUDA_HOME'] == toolkit
    # a CUDA_HOME that is no toolkit is named
    err = machine.refused(CUDA_HOME=str(tmp_path), FORCE_CUDA='1')
    assert f'CUDA_HOME={tmp_path} is not a CUDA toolkit' in err


def test_choosing_the_torch_build(machine):
    assert machine.plan(TORCH_CUDA='cu126')['TORCH_INDEX_URL'] == \
        'https://download.pytorch.org/whl/cu126'
    assert machine.plan(TORCH_CUDA='cu126', TORCH_INDEX_URL='https://mirror/whl/cu126')[
        'TORCH_INDEX_URL'] == 'https://mirror/whl/cu126'
    assert 'TORCH_CUDA=12.6 is not a PyTorch build name' in machine.refused(TORCH_CUDA='12.6')
    # the requirement names the build, so an installed build of another CUDA does not satisfy it
    proc = subprocess.run(['bash', '-c', f'source {SCRIPT}; torch_spec torch; '
                           'TORCH_CUDA=cu126 torch_spec torchvision'],
                          capture_output=True, text=True, timeout=30)
    assert proc.stdout.split() == [f'torch=={pin("torch")}',
                                   f'torchvision=={pin("torchvision")}+cu126']


def test_print_plan_needs_an_installed_torch(machine, tmp_path):
    proc = machine.run('--print-plan', MMTLALIGN_VENV=str(tmp_path / 'nowhere'))
    assert proc.returncode != 0 and 'no virtual environment at' in proc.stderr
    proc = machine.run('--frobnicate')
    assert proc.returncode != 0 and "unknown argument '--frobnicate'" in proc.stderr


def test_the_mmcv_cache_key_has_one_source(machine, tmp_path):
    """setup_env.sh records the key and folder it used; the mmcv-ops error names that folder."""
    from mmtlalign.engine.downstream_checks import mmcv_build_record, rebuild_hint
    for gpu_plan in ({}, dict(FORCE_CUDA='1')):
        if gpu_plan:
            machine.torch('12.6', gpu=True)
            machine.gpus(1)
            machine.nvcc_on_path(make_toolkit(str(tmp_path / 'cuda-12.6'), '12.6'))
        plan = machine.plan(**gpu_plan)
        proc = machine.shell('plan_only >/dev/null && write_mmcv_record', **gpu_plan)
        assert proc.returncode == 0, proc.stderr
        record = mmcv_build_record(machine.venv)
        assert record == {'MMCV_CACHE_KEY': plan['MMCV_CACHE_KEY'],
                          'MMCV_WHEEL_DIR': plan['MMCV_WHEEL_DIR']}
        assert plan['MMCV_WHEEL_DIR'] == str(tmp_path / 'cache' / 'wheels' /
                                             plan['MMCV_CACHE_KEY'])
        hint = rebuild_hint(machine.venv)
        assert f"rm -rf {plan['MMCV_WHEEL_DIR']} {machine.venv}/.mmtlalign-setup" in hint
    assert 'cpuops' not in plan['MMCV_CACHE_KEY']  # the second, a CUDA build's key
    # an environment set up before the record existed: how to find the key
    assert '--print-plan' in rebuild_hint(str(tmp_path / 'older-venv'))


def _system_python_with_only_torch(tmp_path, site):
    """A Python that has torch + torchvision (and what they import) and nothing else of the
    stack: a plain venv of the base interpreter with a .pth to links of those packages."""
    import glob
    import sys
    keep = re.compile(r'^(torch|torchvision|torchgen|functorch|triton|nvidia|cuda|filelock|'
                      r'typing_extensions|'
                      r'sympy|mpmath|networkx|jinja2|markupsafe|fsspec|numpy|pil|pillow)'
                      r'([-_.].*)?$', re.I)
    links = tmp_path / 'system-site'
    links.mkdir()
    for path in glob.glob(osp.join(site, '*')):
        name = osp.basename(path)
        if keep.match(name) and not name.startswith('__'):
            os.symlink(path, links / name)
    system = tmp_path / 'system-python'
    subprocess.run([sys.base_prefix + '/bin/python3', '-m', 'venv', '--without-pip',
                    str(system)], check=True)
    purelib = subprocess.run([str(system / 'bin' / 'python'), '-c',
                              'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(osp.join(purelib, 'system-torch.pth'), 'w') as f:
        f.write(str(links) + '\n')
    return str(system / 'bin' / 'python'), str(links)


@pytest.mark.slow
def test_wheelhouse_and_offline_install_without_network(tmp_path):
    """--download DIR on this machine (the registry), then --offline DIR with no network at all
    (a network namespace without interfaces, and pip --no-index) into a new venv that reuses
    a python's torch; everything else must come from the wheelhouse."""
    import shutil
    import sys
    import time
    if os.geteuid() != 0 or shutil.which('unshare') is None:
        pytest.skip('needs root and unshare(1) to take the network away')
    house, venv = str(tmp_path / 'wheelhouse'), str(tmp_path / 'venv')
    env = dict(os.environ, PYTHON=sys.executable)
    t = time.time()
    r = subprocess.run(['bash', SCRIPT, '--download', house], env=env, capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    names = os.listdir(house)
    size = sum(osp.getsize(osp.join(house, n)) for n in names) / 2 ** 20
    print(f'wheelhouse: {len(names)} files, {size:.0f} MiB, {time.time() - t:.0f} s')
    assert f'mmcv-{pin("mmcv")}.tar.gz' in names
    assert not [n for n in names if re.match(r'(torch|torchvision|nvidia|triton)[-_]', n)]
    assert any(n.startswith('mmengine-') for n in names)

    import torch
    site = osp.dirname(osp.dirname(torch.__file__))
    system_python, links = _system_python_with_only_torch(tmp_path, site)

    # one tampered wheel (and the wheelhouse's own pins.txt asking for something else): refused
    # by the lock's hashes before anything is built or installed
    tampered = str(tmp_path / 'tampered')
    shutil.copytree(house, tampered, copy_function=os.link)
    victim = next(n for n in names if n.startswith('ninja-'))
    os.remove(osp.join(tampered, victim))
    shutil.copy(osp.join(house, victim), osp.join(tampered, victim))
    with open(osp.join(tampered, victim), 'r+b') as f:
        f.seek(-100, 2)
        f.write(b'\0' * 10)
    with open(osp.join(tampered, 'pins.txt'), 'w') as f:
        f.write('numpy==2.0.0\n')
    r = subprocess.run(['unshare', '-n', 'bash', SCRIPT, '--offline', tampered],
                       env=dict(os.environ, PYTHON=system_python,
                                MMTLALIGN_VENV=str(tmp_path / 'venv-tampered')),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0, r.stdout[-2000:]
    assert 'THESE PACKAGES DO NOT MATCH THE HASHES' in r.stderr and victim in r.stderr, r.stderr
    assert 'step 2/4' not in r.stdout  # nothing compiled, nothing installed

    t = time.time()
    r = subprocess.run(['unshare', '-n', 'bash', SCRIPT, '--offline', house],
                       env=dict(os.environ, PYTHON=system_python, MMTLALIGN_VENV=venv),
                       capture_output=True, text=True, timeout=3600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    print(f'offline install: {time.time() - t:.0f} s')
    assert 'environment ready' in out
    check = subprocess.run(
        [osp.join(venv, 'bin', 'python'), '-c',
         'import torch, mmengine, mmcv.ops, mmtlalign; print(torch.__file__); '
         'print(mmengine.__file__)'], capture_output=True, text=True, cwd=str(tmp_path))
    assert check.returncode == 0, check.stderr
    torch_file, mmengine_file = check.stdout.split()
    assert torch_file.startswith(links)  # the machine's torch, reused
    assert mmengine_file.startswith(venv)  # the rest installed from the wheelhouse
    # the mmcv record names what this install used, for its torch
    with open(osp.join(venv, '.mmtlalign-mmcv')) as f:
        assert f'_torch-{torch.__version__.split("+")[0]}_' in f.read()


def test_gpu_check_refuses_without_a_gpu_and_lists_its_steps(tmp_path):
    script = osp.join(ROOT, 'tools', 'gpu_check.sh')
    env = dict(os.environ, PATH='/usr/bin:/bin')  # no nvidia-smi
    r = subprocess.run(['bash', script, '--out', str(tmp_path / 'r')], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert 'no NVIDIA GPU here' in r.stderr and '--dry-run' in r.stderr
    assert not (tmp_path / 'r').exists()  # nothing started
    r = subprocess.run(['bash', script, '--dry-run'], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    steps = [line.split()[0] for line in r.stdout.splitlines() if line and line[0] != ' ']
    assert steps[:6] == ['setup', 'cuda', 'gpu_tests', 'bench_deit_s', 'bench_swin_t',
                         'dist_train_1gpu'], r.stdout
    assert '-m gpu tests/test_gpu.py' in r.stdout
    assert '--model swin-t --device cuda --amp' in r.stdout
    r = subprocess.run(['bash', script, '--offline'], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and 'wheelhouse' in r.stderr


# ----------------------------------------------------------------------------- the lock
UNLOCKED = ('torch', 'torchvision', 'mmcv')


def _norm(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def _requirements(path):
    """{name: version or None} of a requirements file (pins, tests)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line:
                m = re.match(r'([A-Za-z0-9_.\-]+)\s*(?:==\s*([^\s;]+))?', line)
                out[_norm(m.group(1))] = m.group(2)
    return out


def _lock():
    """{name: (version, [sha256 hashes])} of requirements/lock.txt."""
    out, name = {}, None
    with open(osp.join(ROOT, 'requirements', 'lock.txt')) as f:
        for line in f:
            m = re.match(r'([a-z0-9][a-z0-9\-]*)==([^\s;]+)', line)
            if m:
                name = m.group(1)
                out.setdefault(name, (m.group(2), []))  # one version per marker: the first
            for h in re.findall(r'--hash=sha256:([0-9a-f]{64})', line):
                out[name][1].append(h)
    return out


def test_the_lock_covers_every_pin_at_its_version():
    """requirements/lock.txt and the pins cannot drift apart: every pinned package (but the
    unlocked torch, torchvision and mmcv) and every test tool is locked at its pinned version,
    every locked package has SHA-256 hashes, and the script's own check agrees."""
    lock = _lock()
    wanted = _requirements(osp.join(ROOT, 'requirements', 'pins.txt'))
    wanted.update(_requirements(osp.join(ROOT, 'requirements', 'tests.txt')))
    for name, version in wanted.items():
        if name in UNLOCKED:
            assert name not in lock, f'{name} is installed by setup_env.sh, not from the lock'
            continue
        assert name in lock, (f'{name} is pinned but not locked; regenerate the lock: '
                              'bash tools/setup_env.sh --lock')
        if version:
            assert lock[name][0] == version, (name, lock[name][0], version)
    for name, (version, hashes) in lock.items():
        assert hashes, f'{name}=={version} has no hash in the lock'
    assert not [n for n in lock if re.match(r'(nvidia|triton|cuda)-', n)]  # torch's own
    proc = subprocess.run(['bash', '-c', f'source {SCRIPT}; check_lock && echo ok'],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == 'ok', proc.stderr


def test_a_lock_that_does_not_match_the_pins_is_refused(tmp_path):
    pins = tmp_path / 'pins.txt'
    with open(osp.join(ROOT, 'requirements', 'pins.txt')) as f:
        pins.write_text(f.read().replace(f'mmengine=={pin("mmengine")}', 'mmengine==0.10.6')
                        + 'einops-extra==1.0\n')
    proc = subprocess.run(['bash', '-c', f'source {SCRIPT}; PINS={pins}; check_lock'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and proc.stderr.count('\n') == 1, proc.stderr
    assert (f'mmengine is locked at {pin("mmengine")}, pinned at 0.10.6, and 1 more); '
            'regenerate it: bash tools/setup_env.sh --lock') in proc.stderr


def _wheel(folder, name, version, code):
    """A real pure-Python wheel of module ``name`` with ``code``; returns its path."""
    import base64
    import hashlib
    import zipfile
    path = osp.join(folder, f'{name}-{version}-py3-none-any.whl')
    info = f'{name}-{version}.dist-info'
    files = {f'{name}.py': code,
             f'{info}/METADATA': f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n',
             f'{info}/WHEEL': 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n'
                              'Tag: py3-none-any\n'}
    record = ''.join(
        f'{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b"=").decode()},{len(t)}\n'  # noqa: E501
        for n, t in files.items()) + f'{info}/RECORD,,\n'
    os.makedirs(folder, exist_ok=True)
    with zipfile.ZipFile(path, 'w') as z:
        for n, t in {**files, f'{info}/RECORD': record}.items():
            z.writestr(n, t)
    return path


def test_offline_install_refuses_a_tampered_wheel(tmp_path):
    """A real pip (``--no-index``, no network) installing from a wheelhouse through the
    script's own ``install_locked``: the genuine wheel installs; the same file name with other
    contents is refused by the lock's hash, and so is a newer version that the wheelhouse's own
    pins.txt asks for. Without the lock (the wheelhouse's pins as constraints, as --offline
    did), the tampered wheel installs and its code runs on import."""
    import hashlib
    import shutil
    import sys
    genuine = _wheel(str(tmp_path / 'genuine'), 'mmtlalign_probe', '1.0', 'FLAG = "genuine"\n')
    with open(genuine, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    lock = tmp_path / 'lock.txt'
    lock.write_text(f'mmtlalign-probe==1.0 \\\n    --hash=sha256:{digest}\n    # via tests\n')
    marker = tmp_path / 'pwned'
    evil = f'open({str(marker)!r}, "w").write("ran")\nFLAG = "evil"\n'
    house = tmp_path / 'house'
    _wheel(str(house), 'mmtlalign_probe', '1.0', evil)  # same name, other bytes
    _wheel(str(house), 'mmtlalign_probe', '2.0', evil)  # a newer one, wanted by its pins.txt
    (house / 'pins.txt').write_text('mmtlalign-probe==2.0\n')
    venv = tmp_path / 'venv'  # a bare one: this pip installs into it (pip --python)
    subprocess.run([sys.base_prefix + '/bin/python3', '-m', 'venv', '--without-pip', str(venv)],
                   check=True, timeout=120)
    # no network: a namespace without interfaces where we may, else a dead proxy too
    prefix = ['unshare', '-n'] if (os.geteuid() == 0 and shutil.which('unshare')) else []
    env = dict(PATH='/usr/bin:/bin', HOME=str(tmp_path), PIP_NO_INDEX='1',
               PIP_FIND_LINKS=str(house), PIP_CONFIG_FILE='/dev/null',
               https_proxy='http://127.0.0.1:9', http_proxy='http://127.0.0.1:9')
    py = str(venv / 'bin' / 'python')
    pip = f'{sys.executable} -m pip --python {py} --disable-pip-version-check'

    def install(code):
        return subprocess.run(
            [*prefix, 'bash', '-c', f'set -euo pipefail; source {SCRIPT}; VENV={venv}; '
             f'LOCK={lock}; PIP=({pip}); PIP_QUIET=(-q); '
             + code], env=env, capture_output=True, text=True, timeout=300)

    def probe():
        return subprocess.run([py, '-c', 'import mmtlalign_probe as m; print(m.FLAG)'],
                              capture_output=True, text=True, cwd=str(tmp_path)).stdout.strip()

    # before: the wheelhouse's pins as constraints, no hashes
    r = install(f'"${{PIP[@]}}" install -q -c {house}/pins.txt mmtlalign-probe')
    assert r.returncode == 0, r.stderr
    assert probe() == 'evil' and marker.read_text() == 'ran'
    marker.unlink()
    subprocess.run([*pip.split(), 'uninstall', '-y', '-q', 'mmtlalign-probe'], check=True)

    # now: the lock's hash refuses the tampered 1.0, and 2.0 is never considered
    r = install('install_locked mmtlalign-probe')
    assert r.returncode != 0
    assert 'THESE PACKAGES DO NOT MATCH THE HASHES' in r.stderr, r.stderr
    assert f'Expected sha256 {digest}' in r.stderr
    assert probe() == '' and not marker.exists()
    # the genuine wheel in the wheelhouse installs
    for name in os.listdir(house):
        os.remove(house / name)
    shutil.copy(genuine, house)
    r = install('install_locked mmtlalign-probe')
    assert r.returncode == 0, r.stderr
    assert probe() == 'genuine'
