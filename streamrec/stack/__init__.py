"""The embedded local stack (Kafka, Redis, Triton) as background processes."""

from streamrec.stack.manager import LocalStack, ServiceStatus
from streamrec.stack.process import StackError

__all__ = ["LocalStack", "ServiceStatus", "StackError"]
