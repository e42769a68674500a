"""Steps: the nodes of a pipeline's DAG, each of one *kind*.

``StepSpec`` is a union of models discriminated by the field ``kind``:

- ``PythonStep`` (``kind: python``, the default when ``kind`` is left out): a
  function, called by the runtime entry point (``python -m ferryman.runtime``);
- ``ContainerStep`` (``kind: container``): an image, with an optional command
  and args, run by a container infrastructure;
- ``TaskStep`` (``kind: task``): a task of a ``type`` with a ``config``, done
  on a remote service by the plugin that handles the type (``ferryman.plugins``),
  on the ``task`` infrastructure.

Every kind has the fields of ``StepBase`` (name, inputs, dependencies, retry
policy, timeout, infrastructure, env, secrets, resources). How a kind's result
is read lives outside the domain, in ``ferryman.infra.step_kinds``; which
kinds an infrastructure runs is declared by the infrastructure.

A new kind is a subclass of ``StepBase`` with ``kind: Literal["<name>"]``,
added as one more member of ``StepSpec``, plus its ``StepKind`` object
(docs/decisions/0008-open-step-kinds.md).

Compatibility with stored specs: before kinds were split, a step was one flat
model, so every stored step carries ``function``, ``image``, ``command`` and
``args``, null where they did not apply. ``StepSpec`` drops those nulls on
input, and each model names them in ``legacy_nulls`` so that
``PipelineSpec.canonical_json`` puts them back: the version hash of an
unchanged pipeline stays what it was.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from ferryman.domain.names import check_name
from ferryman.domain.retry import RetryPolicy, check_exception_names

#: The kind of a step that does not name one.
DEFAULT_KIND = "python"


class FunctionRef(BaseModel):
    """Where the code of a python step lives: an importable module or a file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    module: str | None = None
    file: str | None = None
    qualname: str

    @model_validator(mode="after")
    def _one_source(self) -> FunctionRef:
        if not self.module and not self.file:
            raise ValueError("a function reference needs a module or a file")
        return self

    def display(self) -> str:
        return f"{self.module or self.file}:{self.qualname}"


class StepBase(BaseModel):
    """The fields every kind of step has. Not a step by itself: see ``StepSpec``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    retries: int = Field(default=0, ge=0, le=100)
    retry_delay: float = Field(default=1.0, ge=0)
    retry_backoff: float = Field(default=2.0, ge=1)
    retry_jitter: float = Field(default=0.1, ge=0, le=1)
    retry_max_delay: float = Field(default=300.0, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    infrastructure: str | None = None
    infra_overrides: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str | None] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    resources: dict[str, Any] = Field(default_factory=dict)

    #: Fields of the old flat step model that this kind does not have. Stored
    #: specs carry them as null; the version hash keeps them (module docstring).
    legacy_nulls: ClassVar[tuple[str, ...]] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("step", v)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            retries=self.retries,
            delay=self.retry_delay,
            backoff=self.retry_backoff,
            jitter=self.retry_jitter,
            max_delay=self.retry_max_delay,
        )


def _step_name(data: dict[str, Any]) -> Any:
    return data.get("name")


def _other_problems_first(handler: Callable[[Any], Any], stand_in: dict[str, Any]) -> None:
    """Validate a step with a stand-in for its missing kind field: the other
    fields' errors are reported (raised) first, and the missing field only
    when there are none, as it was before kinds were split."""
    handler(stand_in)


def _exception_names(value: Any) -> Any:
    """``retry_on``/``no_retry_on``: one dotted name or a list of them (the
    DSL turns exception classes into names)."""
    return check_exception_names(value if isinstance(value, (list, tuple)) else [value])


def _exit_codes(value: Any) -> Any:
    return value if isinstance(value, (list, tuple)) else [value]


def _unset(v: Any) -> bool:
    # Fields added after versions were first hashed are left out of the dump
    # while unset (empty), so a pipeline without them hashes as before.
    return not v


ExceptionNames = Annotated[list[str], BeforeValidator(_exception_names)]
ExitCodes = Annotated[list[Annotated[int, Field(ge=1, le=255)]], BeforeValidator(_exit_codes)]


class PythonStep(StepBase):
    """A step that calls a Python function (the default kind).

    ``retry_on``/``no_retry_on`` limit its retries to the exceptions of the
    listed types (and their subclasses) / to all but those.
    """

    kind: Literal["python"] = "python"
    function: FunctionRef
    retry_on: ExceptionNames = Field(default_factory=list, exclude_if=_unset)
    no_retry_on: ExceptionNames = Field(default_factory=list, exclude_if=_unset)

    legacy_nulls: ClassVar[tuple[str, ...]] = ("image", "command", "args")

    @model_validator(mode="after")
    def _lists_apart(self) -> PythonStep:
        both = [n for n in self.retry_on if n in self.no_retry_on]
        if both:
            raise ValueError(f"{', '.join(both)} cannot be in both retry_on and no_retry_on")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _needs_function(cls, data: Any, handler: ModelWrapValidatorHandler[PythonStep]) -> Any:
        if isinstance(data, dict) and data.get("function") is None:
            _other_problems_first(handler, {**data, "function": {"module": "_", "qualname": "_"}})
            raise ValueError(f"python step {_step_name(data)!r} needs a function")
        return handler(data)


class ContainerStep(StepBase):
    """A step that runs an image (``command`` replaces its entrypoint, ``args``
    its default command; both are templates rendered per attempt)."""

    kind: Literal["container"] = "container"
    image: str
    command: list[str] | None = None
    args: list[str] | None = None
    #: Retry only the exits with these codes / with any code but these.
    retry_on_exit_codes: ExitCodes = Field(default_factory=list, exclude_if=_unset)
    no_retry_on_exit_codes: ExitCodes = Field(default_factory=list, exclude_if=_unset)

    legacy_nulls: ClassVar[tuple[str, ...]] = ("function",)

    @model_validator(mode="after")
    def _codes_apart(self) -> ContainerStep:
        both = [str(c) for c in self.retry_on_exit_codes if c in self.no_retry_on_exit_codes]
        if both:
            raise ValueError(
                f"exit code(s) {', '.join(both)} cannot be in both retry_on_exit_codes and "
                "no_retry_on_exit_codes"
            )
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _needs_image(cls, data: Any, handler: ModelWrapValidatorHandler[ContainerStep]) -> Any:
        if isinstance(data, dict) and data.get("image") in (None, ""):
            _other_problems_first(handler, {**data, "image": "_"})
            raise ValueError(f"container step {_step_name(data)!r} needs an image")
        return handler(data)


#: The infrastructure task steps run on unless they name another.
TASK_INFRASTRUCTURE = "task"


class TaskStep(StepBase):
    """A step done on a remote service by a plugin (``ferryman.plugins``).

    ``type`` names the task type; the plugin that is the default for it does
    the task unless ``plugin`` names one. ``config`` is the plugin's task
    configuration: its strings are templates (``{{ params.X }}``,
    ``{{ inputs.X }}``, ``${params.X}``, ``${steps.X}``, ``{{ run_id }}``...)
    rendered per attempt. Validated against the plugin's model when it runs.
    """

    kind: Literal["task"] = "task"
    type: str = Field(min_length=1, max_length=100)
    plugin: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    infrastructure: str | None = TASK_INFRASTRUCTURE


def _kind_of(value: Any) -> Any:
    """The discriminator: a mapping's ``kind`` (python when absent), a model's kind."""
    if isinstance(value, dict):
        return value.get("kind", DEFAULT_KIND)
    return getattr(value, "kind", None)


def _known_kind(value: Any) -> Any:
    """Refuse an unknown kind by its name; drop the legacy nulls of stored steps."""
    if not isinstance(value, dict):
        return value
    kind = value.get("kind", DEFAULT_KIND)
    model = STEP_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(sorted(STEP_MODELS))
        raise ValueError(f"step {_step_name(value)!r}: unknown kind {kind!r} (known: {known})")
    legacy = model.legacy_nulls
    if any(k in value and value[k] is None for k in legacy):
        value = {k: v for k, v in value.items() if not (k in legacy and v is None)}
    return value


StepSpec = Annotated[
    Annotated[PythonStep, Tag("python")]
    | Annotated[ContainerStep, Tag("container")]
    | Annotated[TaskStep, Tag("task")],
    Discriminator(
        _kind_of,
        custom_error_type="step_type",
        custom_error_message="a step must be a mapping with a name and a known kind",
    ),
    BeforeValidator(_known_kind),
]
"""One step of a pipeline: the model of its kind (see the module docstring)."""


def _members() -> dict[str, type[StepBase]]:
    union = get_args(StepSpec)[0]
    out: dict[str, type[StepBase]] = {}
    for member in get_args(union):
        model, tag = get_args(member)[0], get_args(member)[1]
        out[tag.tag] = model
    return out


#: Kind name → step model, for every member of ``StepSpec``.
STEP_MODELS: dict[str, type[StepBase]] = _members()


@cache
def _adapter() -> TypeAdapter[StepSpec]:
    return TypeAdapter(StepSpec)


def parse_step(data: Any) -> StepSpec:
    """Validate one step (a mapping or a step model) into the model of its kind."""
    return _adapter().validate_python(data)


def error_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """A validation error's location without the kind tag pydantic puts inside a
    step: ``("steps", 0, "python", "retries")`` → ``("steps", 0, "retries")``."""
    return tuple(
        part
        for i, part in enumerate(loc)
        if not (part in STEP_MODELS and (i == 0 or isinstance(loc[i - 1], int)))
    )
