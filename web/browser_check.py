#!/usr/bin/env python3
"""finegrain in a real browser: drives headless Chromium (Debian's `chromium` package, no
browser download) over the DevTools protocol on a pipe, through the page that
`web/build.sh` builds into web/dist, served from 127.0.0.1 only.

Two checks, each failing the run on any problem:
  1. check.html creates every compute pipeline finegrain has in the browser's WebGPU
     (Dawn, with its own WGSL compiler, Tint), with WebGPU's default limits, and fails on
     any compilation message or pipeline error. Modules the adapter cannot have
     (shader-f16 where it lacks the feature, wgpu's native-only cooperative matrices) are
     listed as not requested.
  2. index.html?selftest classifies the shipped sample images with the shipped model; the
     top-1 class must equal native `infer`'s (`--native FILE`, the JSON lines of
     `cargo run --example infer -- --json --top 10 data/fashion-mnist-samples`) and every
     class probability must be within --tolerance of it.

Usage: python3 web/browser_check.py --native native.json [--dist web/dist]
Exit status 0 when every check passed; the last line is "N passed, M failed".
"""
import argparse
import fcntl
import functools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--enable-unsafe-webgpu",  # WebGPU on Linux
    "--remote-debugging-pipe",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


Quiet.extensions_map = dict(SimpleHTTPRequestHandler.extensions_map, **{".wasm": "application/wasm", ".js": "text/javascript"})


class Browser:
    """Chromium with the DevTools protocol on fds 3 (commands in) and 4 (messages out)."""

    def __init__(self, exe):
        self.profile = tempfile.mkdtemp(prefix="finegrain-chromium-")
        to_child, self.w = os.pipe()
        self.r, from_child = os.pipe()
        # Above 10, so that placing them at 3 and 4 in the child cannot clobber each other.
        a = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)

        def place():
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=place,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for fd in (to_child, from_child, a, b):
            os.close(fd)
        self.next_id = 0
        self.replies = {}
        self.events = queue.Queue()
        self.cond = threading.Condition()
        self.console = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._stderr, daemon=True).start()
        self.stderr_lines = []

    def _stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode(errors="replace").rstrip())

    def _read(self):
        buf = b""
        while True:
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self.cond:
                        self.replies[msg["id"]] = msg
                        self.cond.notify_all()
                elif msg.get("method") == "Runtime.consoleAPICalled":
                    args = msg["params"].get("args", [])
                    text = " ".join(str(x.get("value", x.get("description", ""))) for x in args)
                    self.console.append(f"console.{msg['params'].get('type')}: {text}")
                elif msg.get("method") == "Runtime.exceptionThrown":
                    d = msg["params"]["exceptionDetails"]
                    text = d.get("exception", {}).get("description") or d.get("text")
                    self.console.append(f"exception: {text}")
        with self.cond:
            self.cond.notify_all()

    def send(self, method, params=None, session=None, timeout=60):
        self.next_id += 1
        mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self.cond:
            while mid not in self.replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"{method}: no answer from Chromium (exit status {self.proc.poll()})")
                self.cond.wait(min(left, 1.0))
            reply = self.replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply["result"]

    def open(self, url):
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Runtime.enable", session=session)
        return session

    def wait_for(self, session, name, timeout):
        """The string the page leaves in window[name], waiting up to `timeout` seconds."""
        expr = (
            "new Promise((resolve) => { const t = setInterval(() => {"
            f" if (window.{name} !== undefined) {{ clearInterval(t); resolve(window.{name}); }}"
            " }, 50); })"
        )
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the page did not set window.{name} within {timeout} s")
            try:
                r = self.send(
                    "Runtime.evaluate",
                    {"expression": expr, "awaitPromise": True, "returnByValue": True, "timeout": int(left * 1000)},
                    session=session,
                    timeout=left + 5,
                )
            except RuntimeError as e:
                # The first document (about:blank) can be replaced while we wait on it.
                if "context" in str(e).lower() or "navigated" in str(e).lower():
                    time.sleep(0.2)
                    continue
                raise
            if "exceptionDetails" in r:
                raise RuntimeError(f"window.{name}: {r['exceptionDetails']}")
            return json.loads(r["result"]["value"])

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except RuntimeError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--native", required=True, help="JSON lines of native infer (--json --top 10)")
    ap.add_argument("--dist", default=os.path.join(os.path.dirname(__file__), "dist"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--tolerance", type=float, default=1e-5,
                    help="largest difference allowed between a browser and a native probability")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per page")
    args = ap.parse_args()
    if not os.path.exists(args.chromium):
        sys.exit(f"error: no Chromium at {args.chromium} (apt-get install --no-install-recommends chromium)")
    if not os.path.exists(os.path.join(args.dist, "pkg", "finegrain_web_bg.wasm")):
        sys.exit(f"error: {args.dist} holds no built page: run bash web/build.sh first")
    native = {}
    with open(args.native) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                native[os.path.basename(r["file"])] = r

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=args.dist))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    browser = Browser(args.chromium)
    passed, failed = 0, 0
    try:
        print("browser:", browser.send("Browser.getVersion")["product"])

        t0 = time.monotonic()
        check = browser.wait_for(browser.open(f"{base}/check.html"), "finegrainCheck", args.timeout)
        if "error" in check:
            raise RuntimeError(f"check.html: {check['error']}")
        print(f"adapter: {check['adapter']}")
        print(f"pipelines: {check['modules']} modules and {check['pipelines']} pipelines created "
              f"in {time.monotonic() - t0:.1f} s; not requested: "
              + ("; ".join(f"{s['module']} ({s['why']})" for s in check["skipped"]) or "none"))
        for f in check["failures"]:
            print(f"FAILED pipeline {f['module']}.{f['entry']}:\n  " + f["message"].replace("\n", "\n  "))
        failed += len(check["failures"])
        passed += check["pipelines"] - sum(1 for f in check["failures"] if f["entry"])
        if check["pipelines"] == 0:
            print("FAILED: no pipeline was created")
            failed += 1

        t0 = time.monotonic()
        page = browser.wait_for(browser.open(f"{base}/index.html?selftest"), "finegrainResult", args.timeout)
        if "error" in page:
            raise RuntimeError(f"index.html: {page['error']}")
        print(f"page: adapter {page['adapter']}, precision {page['precision']}, "
              f"{len(page['results'])} images in {time.monotonic() - t0:.1f} s (load included)")
        worst = 0.0
        for r in page["results"]:
            name = r["file"]
            problems = []
            want = native.get(name)
            if r.get("error"):
                problems.append(r["error"])
            elif want is None:
                problems.append("no native result for this file")
            else:
                got_p = {c["class"]: c["probability"] for c in r["top"]}
                want_p = {c["class"]: c["probability"] for c in want["top"]}
                if r["top"][0]["class"] != want["top"][0]["class"]:
                    problems.append(f"top-1 {r['top'][0]['name']} in the browser, {want['top'][0]['name']} natively")
                if set(got_p) != set(want_p):
                    problems.append(f"classes {sorted(got_p)} in the browser, {sorted(want_p)} natively")
                else:
                    d = max(abs(got_p[c] - want_p[c]) for c in got_p)
                    worst = max(worst, d)
                    if d > args.tolerance:
                        problems.append(f"a probability differs by {d:.2e} (tolerance {args.tolerance:.0e})")
                if r.get("cam_bytes", 0) == 0:
                    problems.append("no class-map picture")
            if problems:
                failed += 1
                print(f"FAILED {name}: " + "; ".join(problems))
            else:
                passed += 1
                top = r["top"][0]
                print(f"ok {name}: {top['name']} {100 * top['probability']:.2f}% (native "
                      f"{100 * want['top'][0]['probability']:.2f}%)")
        print(f"largest probability difference, browser against native: {worst:.2e}")
    except RuntimeError as e:
        failed += 1
        print(f"FAILED: {e}")
        for line in browser.console[-20:]:
            print(f"  {line}")
        for line in browser.stderr_lines[-20:]:
            print(f"  chromium: {line}")
    finally:
        browser.close()
        server.shutdown()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
