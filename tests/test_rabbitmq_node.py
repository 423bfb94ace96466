"""The private node really stops and starts: a durable queue's persistent message survives."""

from typing import TYPE_CHECKING

import aio_pika
import pytest

if TYPE_CHECKING:  # at run time only pytest_plugins imports it, so pytest rewrites it
    from tests.rabbitmq_node import RabbitNode

pytestmark = pytest.mark.broker


async def test_message_survives_stop_app_and_start_app(rabbit_node: "RabbitNode") -> None:
    connection = await aio_pika.connect(rabbit_node.url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue("survivor", durable=True)
        message = aio_pika.Message(b"still here", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, routing_key="survivor")

    rabbit_node.stop_app()
    with pytest.raises(aio_pika.exceptions.AMQPConnectionError):
        await aio_pika.connect(rabbit_node.url)

    rabbit_node.start_app()
    connection = await aio_pika.connect(rabbit_node.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("survivor", durable=True)
        got = await queue.get(no_ack=True, fail=False)
        assert got is not None and got.body == b"still here"
        await queue.delete()
