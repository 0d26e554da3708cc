"""A real Kubernetes control plane on one machine, without Docker.

kind needs a Docker engine, which our machines lack, and a mocked API server would let the
operator pass tests a real cluster fails. So this package builds etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kubectl and helm from pinned upstream Go modules
(``build.sh``) and runs them as local processes (``python -m localcluster up|down|status``).

The product packages (``dstj_api``, ``dstj_operator``, ``moe_trainer``) never import this one:
the local cluster is only where we test and demo them.
"""
