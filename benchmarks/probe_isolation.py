"""The timing side channel of forced guesses, per leak path and isolation mode (tests/engine/test_isolation.py's
probes): verify steps of an attacker's right vs wrong guess of a victim's forced output.

    .venv/bin/python benchmarks/probe_isolation.py [--adaptive on|off]

writes benchmarks/results/isolation_side_channel_adaptive.json (on: the verify width chosen every step, the
default) or isolation_side_channel.json (off: the full width every step). `strict` always runs at the full width.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "engine"))
from sgl_consensus import cpu  # noqa: E402

cpu.activate()
import test_isolation as t  # noqa: E402

from sgl_consensus.testing.engines import EnginePool  # noqa: E402
from sgl_consensus.testing.tiny_models import TinyModelSpec, build_tiny_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adaptive", choices=["on", "off"], default="on")
    adaptive = parser.parse_args().adaptive
    model = build_tiny_model(TinyModelSpec(arch="llama"))
    pool = EnginePool()
    rows = []
    for mode, tenants in (("tenant", ("alice", "alice")), ("tenant", ("alice", "mallory")), ("strict", (None, None))):
        env = {"CONSENSUS_ISOLATION": mode, "CONSENSUS_ADAPTIVE": "off" if mode == "strict" else adaptive}
        engine = pool.get(model, "consensus", env=env, max_running_requests=16)
        for path in ("global", "prefix", "tag", "n"):
            right = t._attacker_steps(engine, path, t.RIGHT, *tenants)
            wrong = t._attacker_steps(engine, path, t.WRONG, *tenants)
            rows.append({"isolation": mode, "adaptive": env["CONSENSUS_ADAPTIVE"], "victim_tenant": tenants[0], "attacker_tenant": tenants[1], "path": path,
                         "steps_right_guess": right, "steps_wrong_guess": wrong})
            print(rows[-1], flush=True)
    pool.close()
    name = "isolation_side_channel_adaptive.json" if adaptive == "on" else "isolation_side_channel.json"
    command = f".venv/bin/python benchmarks/probe_isolation.py --adaptive {adaptive}"
    json.dump({"command": command + " (tests/engine/test_isolation.py probes, tiny Llama, 4 draft tokens)",
               "rows": rows}, open(ROOT / "benchmarks" / "results" / name, "w"), indent=1)

if __name__ == '__main__':
    main()
