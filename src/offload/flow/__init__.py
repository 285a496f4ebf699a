"""Back pressure and limits: bounded queues, rate and concurrency limits."""
