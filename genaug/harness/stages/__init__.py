"""The stage functions, one module each, all functions of the spec, the unit and what earlier stages
wrote: the real subset (`unit_data.py`), the headroom stage's data (`headroom.py`), the teacher,
generators and samples (`generation.py`, `teacher.py`), the gate check and acceptance
(`accepted.py`, `filter_model.py`), one classifier run for both label kinds (`classifier_run.py`),
quality (`quality.py`), the multi-label stages and the classifier stage's label-set inputs
(`multilabel_stages.py`), what differs between one class
and several labels per image (`label_kinds.py`, which the task graph and `Experiment` ask) and the
tests' fault injection (`faults.py`). Imports `design` and `stats` of the harness."""
