"""What the host provides to runs: uids, cgroups, a mount namespace, toolchains, the reaper."""


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None
