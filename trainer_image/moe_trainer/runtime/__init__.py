"""Running generations of training in this process: follow the published membership (`membership.py`,
`k8s_membership.py`), form each generation's group (`rendezvous.py`), reconfigure in place
(`elastic.py`), put a generation together the same way for the one-process and the elastic trainer
(`assembly.py`), and run its steps with their checkpoints, progress and metrics (`generation.py`,
`metrics.py`).
"""
