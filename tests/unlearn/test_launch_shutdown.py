"""Every rank of a torchrun launch destroys its process group at exit, before interpreter finalisation
(a gloo group left to finalisation can abort a rank that has finished its work)."""

import os
import socket
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import atexit, torch, torch.distributed as dist
    # Registered first, so it runs last: after the library's own exit handler.
    atexit.register(lambda: print(f"initialized at exit: {dist.is_initialized()}", flush=True))
    from promptforget.utils.dist import launch_state
    state = launch_state()
    launch_state()  # a second call registers no second handler
    t = torch.ones(1)
    dist.all_reduce(t)
    print(f"world {state.num_processes} sum {int(t.item())}", flush=True)
    """
)


def test_torchrun_ranks_destroy_the_process_group_at_exit(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                        f"--master_port={port}", "--tee=3", str(script)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("world 2 sum 2") == 2, r.stdout
    assert r.stdout.count("initialized at exit: False") == 2, r.stdout
