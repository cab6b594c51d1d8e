"""Screenshots of a profile's MLflow UI in headless Chromium: the experiment's run list and one run's page.

    python scripts/mlflow_screenshots.py results/mini --run atss_r50_pgd --out docs/img

Starts `mlflow server` on 127.0.0.1 over <results dir>/mlflow.db (pgd.tracking.mlflow_server), opens the pages the
README points to and stops the server. Needs Chromium (Debian: apt-get install chromium).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from pgd.tracking import experiment_name, mlflow_server, ui_url

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def rest(base: str, path: str, body: dict | None = None) -> dict:
    if body is None:
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}")
    else:
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def screenshot(url: str, out: Path, size: str = "1600,900", wait_ms: int = 20000) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("error: no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="pgd-chromium-") as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                        f"--virtual-time-budget={wait_ms}", f"--screenshot={out.resolve()}", url],
                       check=True, capture_output=True, timeout=180)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", type=Path, help="<results>/<profile>, the folder of mlflow.db")
    p.add_argument("--profile", default="mini", help="default %(default)s")
    p.add_argument("--run", required=True, help="run name whose page is shot")
    p.add_argument("--out", type=Path, default=Path("docs/img"), help="default %(default)s")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    with mlflow_server(a.results_dir) as base:
        query = urllib.parse.urlencode({"experiment_name": experiment_name(a.profile)})
        exp_id = rest(base, f"experiments/get-by-name?{query}")["experiment"]["experiment_id"]
        runs = rest(base, "runs/search", {"experiment_ids": [exp_id],
                                          "filter": f"attributes.run_name = '{a.run}'"}).get("runs", [])
        if not runs:
            raise SystemExit(f"error: no run {a.run!r} in experiment {experiment_name(a.profile)}")
        run_id = runs[0]["info"]["run_id"]
        shots = [screenshot(ui_url(base, exp_id), a.out / "mlflow-runs.png"),
                 screenshot(ui_url(base, exp_id, run_id), a.out / "mlflow-run.png", size="1600,1300")]
    print("wrote " + " ".join(map(str, shots)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
