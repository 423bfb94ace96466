"""sd-webui: a Reflex web app and diffusers workers joined by a RabbitMQ queue."""
