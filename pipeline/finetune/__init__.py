"""Fine-tuning on the three downstream tasks (sequence classification, NER, extractive QA): pure data and
metric modules (`classification_data`, `conll`, `squad`, `labels`, `metrics`), one adapter per task
(`classify`, `ner`, `qa`, behind `task`), and the loop that runs them (`trainer`). The pure modules import
nothing of `pipeline` outside `finetune`; the adapters use `data.collate` and `training.train_config`; the
trainer uses `training` (the run harness, DeepSpeed settings, checkpoints) and `handoff` (model source,
export, registry, tracking).
"""
