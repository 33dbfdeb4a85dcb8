"""The languages the sandbox runs, one module each (see base.Language); the registry keeps their order."""

from execution.sandbox.languages import cpp, java, javascript, python
from execution.sandbox.languages.base import Commands, Context, Language
from execution.sandbox.languages.java import java_main_class

REGISTRY: dict[str, Language] = {lang.NAME: lang for lang in (python, javascript, java, cpp)}  # type: ignore[misc]
LANGUAGES = tuple(REGISTRY)

__all__ = ["LANGUAGES", "REGISTRY", "Commands", "Context", "Language", "java_main_class"]
