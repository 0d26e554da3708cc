"""The process-node agent: the kubelet's job for pods bound to local "process nodes".

One agent process per node (``python -m localcluster.nodeagent --state DIR --node NAME``,
started by ``python -m localcluster up`` / ``node add``). It registers the Node, heartbeats
through its Lease, and runs each pod bound to it as local processes in the pod's own network,
mount and UTS namespaces. See ``localcluster/README.md`` ("Process nodes") for what a pod gets.
"""
