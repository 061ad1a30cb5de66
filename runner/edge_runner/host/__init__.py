"""What the runner reads from and asks of the Linux host: cgroup limits
(memory, CPU quota) and CPU scheduling of its own threads.
"""
