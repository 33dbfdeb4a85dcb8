"""Each language as data: its commands and how its errors are read, without a sandbox."""

from execution.sandbox import Limits, java_main_class
from execution.sandbox.host.toolchains import Toolchain
from execution.sandbox.languages import LANGUAGES, REGISTRY, Context, cpp, java, javascript, python

BINARIES = {
    "python": "/usr/bin/python3",
    "node": "/usr/bin/node",
    "gxx": "/usr/bin/g++",
    "javac": "/j/javac",
    "java": "/j/java",
}


def context(**kwargs) -> Context:
    return Context(Toolchain("any", BINARIES), Limits(memory_mb=128), memory_cgroup=True, **kwargs)


def lines(text: str) -> list[str]:
    return [ln.rstrip() for ln in text.splitlines() if ln.strip()]


class TestRegistry:
    def test_languages_keep_their_order(self):
        """The registry keeps the order health and toolchains report in."""
        assert LANGUAGES == ("python", "javascript", "java", "cpp")
        assert all(name == REGISTRY[name].NAME for name in LANGUAGES)


class TestCommands:
    def test_python_runs_isolated_and_unbuffered(self):
        """Python has no compile stage and runs main.py in isolated, unbuffered mode."""
        commands = python.commands("print(1)", context())
        assert commands.source == "main.py"
        assert commands.compile is None
        assert commands.run == ["/usr/bin/python3", "-I", "-B", "-u", "main.py"]

    def test_javascript_heap_is_the_memory_limit(self):
        """V8's heap is bounded by the run's memory."""
        assert javascript.commands("", context()).run == ["/usr/bin/node", "--max-old-space-size=128", "main.js"]

    def test_cpp_compiles_then_runs_main(self):
        """C++ compiles main.cpp to ./main."""
        commands = cpp.commands("", context())
        assert commands.compile[0] == "/usr/bin/g++"
        assert commands.compile[-3:] == ["-o", "main", "main.cpp"]
        assert commands.run == ["./main"]

    def test_java_names_the_file_after_the_public_class_and_uses_the_archive(self):
        """The file is the public class's; javac starts from its archive when there is one."""
        code = "public class Foo { public static void main(String[] a) {} }"
        commands = java.commands(code, context(compiler_archive="/cds/javac.jsa"))
        assert commands.source == "Foo.java"
        assert "-J-XX:SharedArchiveFile=/cds/javac.jsa" in commands.compile
        assert commands.run[-1] == "Foo"
        assert "-Xmx128m" in commands.run
        assert "-Xss32m" in commands.run

    def test_java_stacks_are_smaller_without_a_memory_cgroup(self):
        """Without a memory cgroup the address space is tight, so thread stacks shrink."""
        ctx = Context(Toolchain("java", BINARIES), Limits(), memory_cgroup=False)
        assert "-Xss16m" in java.commands("", ctx).run


class TestErrorLines:
    def test_python_traceback_gives_the_exception_line(self):
        """The last unindented exception line of a traceback is the error."""
        stderr = "Traceback (most recent call last):\n  File \"main.py\", line 1\nNameError: name 'x' is not defined\n"
        assert python.error_line(stderr, lines(stderr)) == "NameError: name 'x' is not defined"

    def test_javascript_error_line(self):
        """Node's error line is found below the source excerpt."""
        stderr = "/box/main.js:1\nnull.x\n     ^\n\nTypeError: Cannot read properties of null\n    at main.js:1\n"
        assert javascript.error_line(stderr, lines(stderr)) == "TypeError: Cannot read properties of null"

    def test_java_exception_without_the_thread(self):
        """Java's uncaught exception, without `Exception in thread`."""
        stderr = 'Exception in thread "main" java.lang.ArithmeticException: / by zero\n\tat A.main(A.java:1)\n'
        assert java.error_line(stderr, lines(stderr)) == "java.lang.ArithmeticException: / by zero"

    def test_cpp_terminate_with_what(self):
        """An uncaught C++ exception reads as terminate plus its what()."""
        stderr = "terminate called after throwing an instance of 'std::runtime_error'\n  what():  boom\n"
        assert cpp.error_line(stderr, lines(stderr)).endswith("'std::runtime_error': boom")

    def test_unrecognised_output_is_none(self):
        """Nothing recognised: the caller falls back to the exit status."""
        assert all(REGISTRY[name].error_line("hello\n", ["hello"]) is None for name in LANGUAGES)

    def test_out_of_memory_messages(self):
        """Each runtime's own out-of-memory report is recognised."""
        assert python.out_of_memory("MemoryError\n")
        assert cpp.out_of_memory("what():  std::bad_alloc")
        assert java.out_of_memory("java.lang.OutOfMemoryError: Java heap space")
        assert not java.out_of_memory("java.lang.OutOfMemoryError: unable to create native thread")
        assert javascript.out_of_memory("FATAL ERROR: Reached heap limit Allocation failed")

    def test_compile_errors_are_found_by_each_compiler_pattern(self):
        """The first line matching the compiler's error pattern is the compile error."""
        assert cpp.COMPILE_ERROR.search("main.cpp:1:1: error: 'x' was not declared")
        assert java.COMPILE_ERROR.search("Main.java:3: error: ';' expected")
        assert not java.COMPILE_ERROR.search("Note: Main.java uses unchecked operations.")


class TestJavaMainClass:
    def test_public_class_names_the_file(self):
        """The public top-level class names the file and is run."""
        assert java_main_class("public class Foo { public static void main(String[] a) {} }") == ("Foo", "Foo")

    def test_nested_public_class_and_comments_do_not_confuse(self):
        """Comments, strings and nested classes are ignored."""
        code = """
        // public class Fake {}
        /* public class AlsoFake {} */
        public final class Real {
            public static class Inner {}
            String s = "public class InString {";
            public static void main(String[] a) {}
        }
        """
        assert java_main_class(code) == ("Real", "Real")

    def test_fallback_is_main(self):
        """No class at all falls back to Main."""
        assert java_main_class("interface") == ("Main", "Main")

    def test_main_is_found_in_a_non_public_class(self):
        """With a public class lacking main, the class declaring main runs."""
        code = "public class Util {}\nclass App { public static void main(String[] a) {} }"
        assert java_main_class(code) == ("Util", "App")
