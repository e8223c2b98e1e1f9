"""Fetch one Hugging Face Hub kernel into the Hub cache, so a node loads it offline.

    python attn_hubfetch.py REPO VERSION [--variant V] [--cache DIR] [--from DIR] [--system JSON]

REPO is ``org/name`` (a repository of type "kernel"), VERSION the kernel's major version (its
``v<N>`` branch). Without ``--variant`` the build variant is the one the ``kernels`` package of
*this* Python would load (its own resolver: torch version, C++ ABI, CUDA, CPU, OS), so the files
fetched are exactly those transformers / axolotl load at run time. ``--cache``: the cache folder
(default: what ``kernels`` uses here: $KERNELS_CACHE, else huggingface_hub's HF_HUB_CACHE).
``--from DIR``: copy the kernel from a pre-staged cache (a wheelhouse's ``hub/`` folder) instead of
the network. ``--system JSON`` ({"torch": "2.11", "cxx11abi": true, "backend": "cu130", "cpu":
"x86_64", "os": "linux"}): pick the variant for another machine (pre-staging a wheelhouse).

After the download it writes ``refs/v<N>`` (kernels resolves ``version=N`` offline from it, but
writes none itself) and drops the cached tree listing of that commit (huggingface_hub 2.x caches
the whole repository's listing; offline, a snapshot is then complete only with every variant, so a
one-variant download would not load). Prints one JSON line: repo, version, revision (the commit),
variant, path, created (every path it added) and replaced (files it rewrote: their old text), for an
exact rollback; or error.
Runs on Python >= 3.9 and imports nothing from attn_installer.
"""

import json
import os
import shutil
import sys

__all__ = ["main"]


def _repo_folder(cache, repo):
    return os.path.join(cache, "kernels--" + repo.replace("/", "--"))


def _listing(root):
    found: set = set()
    if not os.path.isdir(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(os.path.join(dirpath, name))
    return found


def _default_cache():
    explicit = os.environ.get("KERNELS_CACHE")
    if explicit:
        return explicit
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _variant(api, repo, sha, system=None):
    """The variant kernels would pick here (or on the machine *system* describes: torch, cxx11abi,
    backend, cpu, os), from the repository's build/ folder at *sha*."""
    from huggingface_hub.hf_api import RepoFolder
    from kernels.variants import parse_variant, resolve_variant, variants_trace_str

    names = sorted({item.path.split("/")[-1] for item in api.list_repo_tree(
        repo, path_in_repo="build", repo_type="kernel", revision=sha) if isinstance(item, RepoFolder)})
    variants = []
    for n in names:
        try:
            variants.append(parse_variant(n))
        except ValueError:
            pass
    if system is None:
        best, trace = resolve_variant(variants)
    else:  # another machine's: kernels' own rules, fed that machine's facts
        from kernels.backends import parse_backend
        from kernels.variants import _resolve_variant_for_system
        from packaging.version import Version

        resolved, trace = _resolve_variant_for_system(
            variants=variants, selected_backend=parse_backend(system["backend"]), cpu=system["cpu"],
            os=system["os"], torch_version=Version(system["torch"]), torch_cxx11_abi=system.get("cxx11abi"),
            tvm_ffi_version=None)
        best = resolved[0] if resolved else None
    if best is None:
        raise LookupError("no build variant fits this environment:\n" + variants_trace_str(trace))
    return best.variant_str


def _copy_staged(source, cache, repo, version):
    """From a pre-staged cache: refs/v<N> names the commit; copy that snapshot (files resolved)."""
    src = _repo_folder(source, repo)
    try:
        with open(os.path.join(src, "refs", f"v{version}")) as fh:
            sha = fh.read().strip()
    except OSError:
        raise LookupError(f"{repo} v{version} is not staged in {source} (no refs/v{version}); stage it with "
                          "`attn-install download --facts FACTS --wheelhouse DIR`") from None
    snap = os.path.join(src, "snapshots", sha)
    variants = sorted(os.listdir(os.path.join(snap, "build"))) if os.path.isdir(os.path.join(snap, "build")) else []
    if not variants:
        raise LookupError(f"the staged {repo} v{version} ({sha[:12]}) has no build variant")
    dest = os.path.join(_repo_folder(cache, repo), "snapshots", sha)
    for variant in variants:
        rel = os.path.join("build", variant)
        for dirpath, _dirs, files in os.walk(os.path.join(snap, rel)):
            for f in files:
                s = os.path.join(dirpath, f)
                d = os.path.join(dest, os.path.relpath(s, snap))
                if not os.path.exists(d):
                    os.makedirs(os.path.dirname(d), exist_ok=True)
                    shutil.copyfile(s, d)
    return sha, variants[0]


def main(argv):
    args = list(argv[1:])
    opts = {}
    for flag in ("--variant", "--cache", "--from", "--system"):
        if flag in args:
            i = args.index(flag)
            opts[flag] = args[i + 1]
            del args[i:i + 2]
    repo, version = args[0], int(args[1])
    out = {"repo": repo, "version": version}
    try:
        cache = opts.get("--cache") or _default_cache()
        folder = _repo_folder(cache, repo)
        before = _listing(folder)
        existed = os.path.isdir(folder)
        # what huggingface_hub makes beside the repository's folder: the cache itself, its tag, the locks
        beside = [cache, os.path.join(cache, "CACHEDIR.TAG"), os.path.join(cache, ".locks"),
                  os.path.join(cache, ".locks", os.path.basename(folder))]
        absent = [p for p in beside if not os.path.exists(p)]
        if "--from" in opts:
            sha, variant = _copy_staged(opts["--from"], cache, repo, version)
        else:
            from huggingface_hub import HfApi

            api = HfApi()
            branch = f"v{version}"
            refs = api.list_repo_refs(repo, repo_type="kernel")
            sha = next((b.target_commit for b in refs.branches if b.name == branch), None)
            if sha is None:
                have = ", ".join(sorted(b.name for b in refs.branches)) or "none"
                raise LookupError(f"{repo} has no branch {branch} (branches: {have})")
            system = json.loads(opts["--system"]) if "--system" in opts else None
            variant = opts.get("--variant") or _variant(api, repo, sha, system)
            api.snapshot_download(repo, repo_type="kernel", revision=sha, cache_dir=cache,
                                  allow_patterns=[f"build/{variant}/*"])
        undo = {}
        ref = os.path.join(folder, "refs", f"v{version}")
        if os.path.isfile(ref):
            with open(ref) as fh:
                old = fh.read()
            if old != sha:
                undo[ref] = old
        os.makedirs(os.path.dirname(ref), exist_ok=True)
        with open(ref, "w") as fh:
            fh.write(sha)
        tree = os.path.join(folder, "trees", f"{sha}.json")
        if os.path.exists(tree):
            if tree in before:  # a listing cached by an earlier download: kept aside for a rollback
                with open(tree) as fh:
                    undo[tree] = fh.read()
            os.unlink(tree)
        path = os.path.join(folder, "snapshots", sha, "build", variant)
        if not os.path.isfile(os.path.join(path, "metadata.json")):
            raise LookupError(f"{path} has no metadata.json after the download")
        created = [folder] if not existed else sorted(_listing(folder) - before)
        created += [p for p in absent if os.path.exists(p)]
        out.update({"revision": sha, "variant": variant, "path": path, "cache": cache,
                    "created": created, "replaced": undo})
    except Exception as e:  # every failure is one line of JSON, the caller decides
        out["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:600]
        print(json.dumps(out))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
