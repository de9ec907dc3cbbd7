#!/usr/bin/env python3
"""The minimum Rust version per feature, from the resolved dependency graph.

No second toolchain can be installed on the CI machine, so the MSRV claim is checked this way:
for each feature, the highest `rust-version` declared by any crate the build would compile
(normal and build dependencies, every target) must not exceed the crate's own `rust-version`.
Our own code is checked by clippy's `incompatible_msrv` lint (it reads `rust-version`), which CI
runs with `-D warnings`. Prints a table (the README's MSRV table) and fails on a violation.
"""
import json
import subprocess
import sys


def ver(s):
    return tuple(int(p) for p in s.split(".")[:3]) + (0,) * (3 - len(s.split(".")[:3]))


meta = json.loads(
    subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--locked"])
)
root = next(p for p in meta["packages"] if p["id"] in meta["workspace_members"])
declared = root["rust_version"]
rust_of = {(p["name"], p["version"]): p.get("rust_version") for p in meta["packages"]}
features = [f for f in root["features"] if f != "default"]

runs = [("(no features)", ["--no-default-features"]), ("default", [])]
runs += [(f, ["--no-default-features", "--features", f]) for f in sorted(features)]
runs += [("all features", ["--all-features"])]

failed = False
print(f"declared rust-version: {declared}")
print("| features | minimum Rust | set by |")
print("|---|---|---|")
for label, args in runs:
    out = subprocess.check_output(
        ["cargo", "tree", "--locked", "-e", "normal,build", "--target", "all",
         "--prefix", "none", "--format", "{p}"] + args,
        text=True,
    )
    best, who = "1.0", "-"
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].startswith("v"):
            continue
        name, version = parts[0], parts[1][1:]
        if name == root["name"]:
            continue
        rv = rust_of.get((name, version))
        if rv and ver(rv) > ver(best):
            best, who = rv, f"{name} {version}"
    print(f"| {label} | {best} | {who} |")
    if ver(best) > ver(declared):
        failed = True
        print(f"  ERROR: {label} needs Rust {best} > declared {declared}", file=sys.stderr)
sys.exit(1 if failed else 0)
