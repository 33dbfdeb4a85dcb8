"""Java: the file is named after the public class, javac compiles it, java runs the class declaring main."""

from __future__ import annotations

import os
import re

from execution.sandbox.host.toolchains import ALWAYS_BOUND, Toolchain, path_is_under, resolve_binary
from execution.sandbox.languages.base import Commands, Context
from execution.sandbox.types import SandboxConfig

NAME = "java"
LABEL = "Java"
MEMORY_KIND = "managed"
VERSION_COMMAND = ("javac", ("-J-Xshare:auto", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1", "-version"))
COMPILED = True
COMPILE_ERROR = re.compile(r"^\S+\.java:\d+: error:")
ENV: dict[str, str] = {"MALLOC_ARENA_MAX": "2"}

# Quick start-up flags for javac and java alike.
JAVA_FAST = ["-Xshare:auto", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData"]
_ERROR = re.compile(r'^(?:Exception in thread "[^"]*" )?([\w$.]*(?:Exception|Error)\b.*)$')
_JAVA_NOISE = re.compile(r'"""[\s\S]*?"""|//[^\n]*|/\*[\s\S]*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')
_JAVA_TYPE = re.compile(
    r"\b(?P<public>public\s+)?(?:(?:abstract|final|strictfp|sealed|non-sealed|static)\s+)*"
    r"(?:class|interface|enum|record)\s+(?P<name>[A-Za-z_$][\w$]*)"
)
_JAVA_MAIN = re.compile(r"\bstatic\s+(?:final\s+)?void\s+main\s*\(|\bvoid\s+static\s+main\s*\(")
_JAVA_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_$][\w$]*(?:\s*\.\s*[A-Za-z_$][\w$]*)*)\s*;", re.M)


def find_toolchain(config: SandboxConfig) -> Toolchain:
    javac = resolve_binary(config.javac_path, ["javac"])
    java = resolve_binary(config.java_path, ["java"])
    if javac is None or java is None:
        which = "javac" if javac is None else "java"
        return Toolchain("java", {}, missing=f"{which} not found (install a JDK or set {which}_path)")
    homes = {os.path.dirname(os.path.dirname(b)) for b in (javac, java)}
    binds = {h for h in homes if not path_is_under(h, ALWAYS_BOUND)}
    files: set[str] = set()
    # Debian's JDK keeps its configuration in /etc/java-N-openjdk behind symlinks.
    for home in homes:
        for root, dirnames, filenames in os.walk(home):
            for name in dirnames + filenames:
                full = os.path.join(root, name)
                if not os.path.islink(full):
                    continue
                target = os.path.realpath(full)
                if path_is_under(target, [home, *ALWAYS_BOUND, *binds]) or not os.path.exists(target):
                    continue
                parts = target.split("/")
                if len(parts) > 3 and parts[1] == "etc" and parts[2].startswith("java"):
                    binds.add("/".join(parts[:3]))
                elif os.path.isfile(target):
                    files.add(target)
    return Toolchain(
        "java", {"javac": javac, "java": java}, binds=tuple(sorted(binds)), bind_files=tuple(sorted(files))
    )


def java_main_class(code: str) -> tuple[str, str]:
    """(source file stem, class to run): the public top-level type names the file; Main otherwise.

    The class to run is the first top-level type declaring main (the public one first),
    qualified by the package if there is one.
    """
    text = _JAVA_NOISE.sub(lambda m: " " * len(m.group(0)), code)
    tops: list[tuple[str, bool, int, int]] = []  # (name, public, start, end)
    depth, pos = 0, 0
    for m in _JAVA_TYPE.finditer(text):
        depth += text.count("{", pos, m.start()) - text.count("}", pos, m.start())
        pos = m.start()
        if depth != 0:
            continue
        body_start = text.find("{", m.end())
        end, d = len(text), 0
        if body_start >= 0:
            for i in range(body_start, len(text)):
                if text[i] == "{":
                    d += 1
                elif text[i] == "}":
                    d -= 1
                    if d == 0:
                        end = i
                        break
        tops.append((m.group("name"), bool(m.group("public")), m.start(), end))
    public = next((name for name, pub, _, _ in tops if pub), None)
    if public and len(public) > 200:
        public = None
    stem = public or "Main"
    with_main = [(name, pub) for name, pub, s, e in tops if _JAVA_MAIN.search(text, s, e)]
    with_main.sort(key=lambda item: not item[1])
    run = with_main[0][0] if with_main else (public or (tops[0][0] if tops else "Main"))
    package = _JAVA_PACKAGE.search(text)
    if package:
        run = re.sub(r"\s+", "", package.group(1)) + "." + run
    return stem, run


def commands(code: str, context: Context) -> Commands:
    stem, main_class = java_main_class(code)
    tc, limits, archive = context.toolchain, context.limits, context.compiler_archive
    cds = [f"-J-XX:SharedArchiveFile={archive}", "-J-Xlog:disable"] if archive else []
    compile_cmd = [
        tc.binaries["javac"],
        *(f"-J{f}" for f in JAVA_FAST),
        *cds,
        f"-J-Xmx{max(64, limits.compile_memory_mb // 2)}m",
        "-encoding",
        "UTF-8",
        "-proc:none",
        "-d",
        ".",
        f"{stem}.java",
    ]
    run_cmd = [
        tc.binaries["java"],
        *JAVA_FAST,
        f"-Xmx{limits.memory_mb}m",
        "-Xss32m" if context.memory_cgroup else "-Xss16m",  # deep recursion; reserved address space, not memory
        "-XX:ReservedCodeCacheSize=64m",
        "-XX:CompressedClassSpaceSize=64m",
        "-XX:MaxMetaspaceSize=256m",
        "-cp",
        ".",
        main_class,
    ]
    return Commands(f"{stem}.java", compile_cmd, run_cmd)


def error_line(stderr: str, lines: list[str]) -> str | None:
    """The uncaught exception, without `Exception in thread "main"`."""
    return next((m.group(1) for ln in lines if (m := _ERROR.match(ln))), None)


def out_of_memory(stderr: str) -> bool:
    return "java.lang.OutOfMemoryError" in stderr and "unable to create native thread" not in stderr
