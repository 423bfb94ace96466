"""The image worker: consume jobs, generate with diffusers, write contract-2 files, acknowledge.

runner.JobRunner is the broker-independent core (used by the AMQP consumer here and by the web
app's embedded queue); consumer.Consumer is the RabbitMQ loop; cli.main is `sd-worker`.
"""
