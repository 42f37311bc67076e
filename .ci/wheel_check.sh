#!/usr/bin/env bash
# The wheel works outside the repository. Build the sdist and the wheel (python -m build: the wheel is built
# from the sdist, so both must be complete), install the wheel into a fresh environment that borrows the CI
# environment's installed dependencies through a .pth file (torch is not installed twice), and from a folder
# outside the checkout run --help, --version, the canonical run for 2 epochs on a data subset, and
# task=report on its trace.
#   PY: the CI environment's python (default .venv/bin/python)    STABILITYSCOPE_DATA: the datasets
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, the venv's own (not its symlink's target)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export STABILITYSCOPE_CACHE="$work/cache"  # the phase-diagram background is computed here, not in the user's cache

"$PY" -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/stabilityscope-*.whl)
"$PY" -m venv --without-pip "$work/venv"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/ci_dependencies.pth"
"$PY" -m pip --python "$work/venv/bin/python" install -q --no-deps "$wheel"

cd "$work"  # outside the checkout: nothing of it can be imported from here
W="$work/venv/bin/python"
"$W" - "$site" "$wheel" <<'PYEOF'
import sys
from importlib import metadata
from pathlib import Path

import stabilityscope
site, wheel = Path(sys.argv[1]), Path(sys.argv[2]).name
assert Path(stabilityscope.__file__).is_relative_to(site), f"imported {stabilityscope.__file__}, not the wheel's copy"
assert wheel.startswith(f"stabilityscope-{stabilityscope.__version__}-"), (wheel, stabilityscope.__version__)
from stabilityscope.analysis.calibration import load_laws
from stabilityscope.cli.app import conf_dir
assert Path(conf_dir(), "config.yaml").is_file() and Path(conf_dir()).is_relative_to(site)
load_laws()  # the packaged calibrated laws travel with the wheel
print(f"wheel: stabilityscope {stabilityscope.__version__} from {Path(stabilityscope.__file__).parent}")
PYEOF
"$W" -m stabilityscope --help > help.txt && grep -q "Usage: python -m stabilityscope" help.txt
[ "$("$W" -m stabilityscope --version)" = "stabilityscope $("$W" -c 'import stabilityscope; print(stabilityscope.__version__)')" ]
"$W" -m stabilityscope train.epochs=2 dataset.train_subset=2000 dataset.test_subset=500 checkpoint_root="$work/runs"
run=$(ls -d "$work"/runs/fmnist_fc-fashion_mnist/*/)
"$W" -m stabilityscope task=report trace="$run" checkpoint_root="$work/runs"
test -s "$run/report.md" && test -s "$(ls "$work"/runs/report/*/report.md)"
echo "wheel check: passed"
