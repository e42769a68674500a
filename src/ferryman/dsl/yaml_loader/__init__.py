"""YAML and JSON pipeline files: they compile to the same ``PipelineSpec`` as
the Python DSL.

Format (JSON files use the same keys)::

    name: etl                      # required
    description: Nightly ETL
    infrastructure: process        # default infrastructure of the steps
    timeout: 600                   # run timeout in seconds (optional)
    labels: {team: data}
    params:                        # name -> definition (or just a type name)
      source: {type: string, default: "s3://bucket/in.csv", description: Input}
      limit: {type: integer, default: 10, minimum: 1}
      lang: {type: string, default: en}
      langs: {type: array, items: string, required: false}
      day: date                    # shorthand: a required parameter of type date
    validators:
      - {kind: language, fields: [lang]}
      - {kind: date, fields: [day], max_age_days: 7}   # extra keys are options
      - {kind: required_together, fields: [a, b]}
    steps:
      - name: extract
        function: etl_steps.py:extract     # file relative to this file, or package.module:function
        inputs: {source: "${params.source}", limit: 3}
        retries: 2
        retry_delay: 0.5
        timeout: 30
        infrastructure: inline
        env: {FOO: bar, UNSET_ME: null}
      - name: load
        function: mypkg.etl:load
        inputs: {rows: "${steps.extract}"}  # depends_on: [extract] is added
        depends_on: [other]                 # extra ordering dependencies
      - name: report
        kind: container
        image: busybox
        command: ["echo", "${params.source}"]   # rendered when the step starts
    triggers:                      # run this pipeline when another one's run ends
      - pipeline: ingest           # the triggering pipeline
        namespace: default         # optional; default: this pipeline's namespace
        state: succeeded           # or states: [succeeded, failed, cancelled]
        params:                    # this pipeline's params, from the triggering run
          source: "${trigger.params.path}"      # its parameter
          limit: "${trigger.steps.count}"       # the output of its step
          upstream: "${trigger.run.id}"         # id, pipeline, namespace, version, state
        labels: {chained: "yes"}   # added; its labels are inherited unless
        inherit_labels: true       # inherit_labels: false

Rules:

- Param ``type`` is one of ``string integer number boolean array object date
  any`` (aliases ``str int float bool list dict``); ``items`` gives the item
  type of an array. A parameter with a ``default`` is optional unless
  ``required: true``; one without is required. An optional parameter whose
  default is null accepts null. Defaults are checked against their type.
- In ``inputs``, a string that is exactly ``${params.x}`` becomes the parameter
  ``x`` and exactly ``${steps.y}`` the output of step ``y`` (added to
  ``depends_on``). Lists and mappings are walked; every other value is a
  literal (a one-key mapping such as ``{$param: x}`` stays literal too).
  ``${params...}``/``${steps...}`` *inside* a longer input string is an error;
  write ``$${...}`` for the literal text ``${...}``.
- In a container step's ``command``/``args``, ``${params.x}`` and
  ``${steps.y}`` stay template text rendered when the step starts; referenced
  steps are added to ``depends_on`` and unknown names are errors.
- ``function: path/to/file.py:qualname`` is relative to the pipeline file's
  directory and stored as an absolute path; ``package.module:qualname`` is
  imported when the step runs.
- A ``custom`` validator's ``ref`` may also name a ``.py`` file relative to
  the pipeline file.
- Unquoted YAML dates (``2024-05-01``) are read as the string ``"2024-05-01"``.
- In a trigger's ``params``, a string that is exactly ``${trigger.params.x}``,
  ``${trigger.steps.y}`` or ``${trigger.run.f}`` reads the triggering run;
  every other value is a literal.

Any problem raises ``PipelineFileError`` naming the file and listing every
problem with its path, e.g. ``steps[1].retries: Input should be greater than
or equal to 0``.
"""

from ferryman.dsl.yaml_loader.compiler import spec_from_mapping
from ferryman.dsl.yaml_loader.context import PipelineFileError
from ferryman.dsl.yaml_loader.files import load_pipeline_file, load_pipeline_text

__all__ = ["PipelineFileError", "load_pipeline_file", "load_pipeline_text", "spec_from_mapping"]
