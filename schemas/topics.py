"""The topic catalogue: the single source of truth for what flows where.

Every topic names its key field, partition count, producing service,
consuming services and the message types it carries. Keys keep all events
of one child (or institution, document, municipality) in one partition, so
they are processed in order; no key is ever a personal code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from schemas.addresses import AddressResolutionFailed, AddressResolved, ResolveAddress
from schemas.allocation import (
    OfferDeadlineSet,
    OfferDeclined,
    OfferExpired,
    OfferMade,
    OfferRevoked,
    ParentAccepted,
    ParentDeclined,
    PlaceAccepted,
    RoundCompleted,
    RunRound,
    StepTaken,
)
from schemas.applications import (
    ApplicationChanged,
    ApplicationRefused,
    ApplicationSubmitted,
    ApplicationWithdrawn,
)
from schemas.authorisations import (
    AuthorisationCheckFailed,
    AuthorisationRefused,
    AuthorisationVerified,
    CheckAuthorisation,
)
from schemas.base import Message
from schemas.clock import ClockAdvanced
from schemas.documents import (
    DocumentContentRejected,
    DocumentContentStored,
    DocumentRegistered,
    DocumentRegistrationFailed,
    RegisterDocument,
    StoreDocumentContent,
)
from schemas.enrollment import (
    CheckEnrollment,
    EnrollmentChecked,
    EnrollmentCheckFailed,
    EnrollmentRefused,
    EnrollmentRegistered,
    RegisterEnrollment,
)
from schemas.institutions import InstitutionRegistered, PlaceReleased, SeatCapacityChanged
from schemas.notifications import (
    NotificationDeemedNotified,
    NotificationDelivered,
    NotificationFailed,
    NotificationPosted,
    NotificationSent,
    SendNotification,
)
from schemas.priority import PriorityConfirmed, PriorityRejected
from schemas.residence import (
    CheckResidence,
    ResidenceChecked,
    ResidenceCheckFailed,
    ResidenceDeclared,
)

# Services and adapters, by the names they use as `producer` and consumer group prefix.
VPS = "vps-adapter"
VIIS = "viis-adapter"
GIS = "gis-adapter"
DVS = "dvs-adapter"
AUTHORISATIONS = "authorisations-adapter"
NOTIFY = "notify-adapter"
ALLOCATION = "allocation"
OPERATOR = "operator"
SERVICES = (VPS, VIIS, GIS, DVS, AUTHORISATIONS, NOTIFY, ALLOCATION, OPERATOR)


@dataclass(frozen=True)
class Topic:
    """One Kafka topic of the hub."""

    name: str
    key: str
    partitions: int
    producer: str
    consumers: tuple[str, ...]
    messages: tuple[type[Message], ...]
    description: str
    config: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def payload_type(self) -> Any:
        """The union of the topic's message types, discriminated by ``event_type``."""
        if len(self.messages) == 1:
            return self.messages[0]
        return Annotated[Union[self.messages], Field(discriminator="event_type")]  # noqa: UP007

    @cached_property
    def adapter(self) -> TypeAdapter[Message]:
        return TypeAdapter(self.payload_type)

    def parse(self, raw: bytes | str) -> Message:
        """Validate a message read from this topic; raises pydantic.ValidationError."""
        return self.adapter.validate_json(raw)

    def key_of(self, message: Message) -> bytes:
        """The Kafka key of a message on this topic."""
        return str(getattr(message, self.key)).encode()


TOPICS: tuple[Topic, ...] = (
    Topic(
        name="vps.pii.applications.v1",
        key="child_ref",
        partitions=6,
        producer=VPS,
        consumers=(ALLOCATION,),
        messages=(ApplicationSubmitted, ApplicationChanged, ApplicationWithdrawn),
        description="Pre-school queue applications from the VPS queue register.",
    ),
    Topic(
        name="vps.pii.institutions.v1",
        key="institution_id",
        partitions=3,
        producer=VPS,
        consumers=(ALLOCATION,),
        messages=(InstitutionRegistered, SeatCapacityChanged, PlaceReleased),
        description="Pre-school institutions, their groups and seats, and released places.",
    ),
    Topic(
        name="vps.population.residence.v1",
        key="child_ref",
        partitions=6,
        producer=VPS,
        consumers=(ALLOCATION,),
        messages=(ResidenceDeclared, ResidenceChecked, ResidenceCheckFailed),
        description=(
            "Declared residence of children and guardians (population register extract): as"
            " the register reports it, and its answers to the checks before every list."
        ),
    ),
    Topic(
        name="vps.population.checks.v1",
        key="child_ref",
        partitions=6,
        producer=ALLOCATION,
        consumers=(VPS,),
        messages=(CheckResidence,),
        description="Requests to the population register: where do the child and guardians live?",
    ),
    Topic(
        name="authorisations.checks.v1",
        key="child_ref",
        partitions=6,
        producer=ALLOCATION,
        consumers=(AUTHORISATIONS,),
        messages=(CheckAuthorisation,),
        description="Requests to the register of authorisations: does an authorisation hold?",
    ),
    Topic(
        name="authorisations.results.v1",
        key="child_ref",
        partitions=6,
        producer=AUTHORISATIONS,
        consumers=(ALLOCATION,),
        messages=(AuthorisationVerified, AuthorisationRefused, AuthorisationCheckFailed),
        description="Answers of the register of authorisations.",
    ),
    Topic(
        name="allocation.applications.v1",
        key="child_ref",
        partitions=6,
        producer=ALLOCATION,
        consumers=(VPS,),
        messages=(ApplicationRefused,),
        description="Applications the hub refused before they counted, for the e-service.",
    ),
    Topic(
        name="viis.enrollment.checks.v1",
        key="child_ref",
        partitions=6,
        producer=ALLOCATION,
        consumers=(VIIS,),
        messages=(CheckEnrollment,),
        description="Requests to VIIS: where do the child and siblings attend?",
    ),
    Topic(
        name="viis.enrollment.registrations.v1",
        key="child_ref",
        partitions=6,
        producer=ALLOCATION,
        consumers=(VIIS,),
        messages=(RegisterEnrollment,),
        description="Requests to VIIS to record an accepted place as an enrolment.",
    ),
    Topic(
        name="viis.enrollment.facts.v1",
        key="child_ref",
        partitions=6,
        producer=VIIS,
        consumers=(ALLOCATION,),
        messages=(
            EnrollmentChecked,
            EnrollmentCheckFailed,
            EnrollmentRegistered,
            EnrollmentRefused,
        ),
        description="Answers of VIIS: attendance facts and enrolment results.",
    ),
    Topic(
        name="gis.address.requests.v1",
        key="subject_ref",
        partitions=6,
        producer=ALLOCATION,
        consumers=(GIS,),
        messages=(ResolveAddress,),
        description="Requests to resolve an address code.",
    ),
    Topic(
        name="gis.address.resolved.v1",
        key="subject_ref",
        partitions=6,
        producer=GIS,
        consumers=(ALLOCATION,),
        messages=(AddressResolved, AddressResolutionFailed),
        description="Resolved addresses: full form, territory, LKS-92 and WGS84 coordinates.",
    ),
    Topic(
        name="allocation.commands.v1",
        key="municipality",
        partitions=1,
        producer=OPERATOR,
        consumers=(ALLOCATION,),
        messages=(RunRound, PriorityConfirmed, PriorityRejected),
        description=(
            "Operator commands to the allocation service: the one-click admission round, and"
            " the commission's decisions on declared priority grounds."
        ),
    ),
    Topic(
        name="allocation.offers.v1",
        key="child_ref",
        partitions=6,
        producer=ALLOCATION,
        consumers=(VPS,),
        messages=(
            OfferMade,
            OfferDeadlineSet,
            OfferRevoked,
            OfferExpired,
            OfferDeclined,
            PlaceAccepted,
        ),
        description="Offers and their outcomes; the VPS e-service shows them to parents.",
    ),
    Topic(
        name="allocation.rounds.v1",
        key="municipality",
        partitions=1,
        producer=ALLOCATION,
        consumers=(VPS,),
        messages=(RoundCompleted,),
        description="Round summaries; the VPS register publishes queue positions from them.",
    ),
    Topic(
        name="allocation.journal.v1",
        key="municipality",
        partitions=1,
        producer=ALLOCATION,
        consumers=(OPERATOR,),
        messages=(StepTaken,),
        config={"retention.ms": "-1"},  # kept for good: rebuilds start from its first entry
        description=(
            "The allocation service's steps, in order: `hub allocation rebuild` replays them"
            " over the input topics to rebuild its state. Keep it (and the inputs) unexpired."
        ),
    ),
    Topic(
        name="allocation.responses.v1",
        key="child_ref",
        partitions=6,
        producer=VPS,
        consumers=(ALLOCATION,),
        messages=(ParentAccepted, ParentDeclined),
        description="Parents' answers to offers, from the e-service or a client service centre.",
    ),
    Topic(
        name="notify.requests.v1",
        key="child_ref",
        partitions=6,
        producer=ALLOCATION,
        consumers=(NOTIFY,),
        messages=(SendNotification,),
        description="Notifications to send (e-adrese first, then e-mail, SMS, letter).",
    ),
    Topic(
        name="notify.receipts.v1",
        key="child_ref",
        partitions=6,
        producer=NOTIFY,
        consumers=(ALLOCATION,),
        messages=(
            NotificationSent,
            NotificationDelivered,
            NotificationDeemedNotified,
            NotificationPosted,
            NotificationFailed,
        ),
        description=(
            "Delivery receipts; a notice's sending (a letter's posting) starts an offer's"
            " deadline, which the allocation service computes."
        ),
    ),
    Topic(
        name="dvs.documents.requests.v1",
        key="document_key",
        partitions=3,
        producer=ALLOCATION,
        consumers=(DVS,),
        messages=(RegisterDocument,),
        description=(
            "Documents to register in the DVS (admission lists, decisions, notices to parents):"
            " a notice is registered before it is rendered, its number printed on it."
        ),
    ),
    Topic(
        name="dvs.documents.content.v1",
        key="document_key",
        partitions=3,
        producer=NOTIFY,
        consumers=(DVS,),
        messages=(StoreDocumentContent,),
        description=(
            "A registered notice's sealed content (an .edoc), as the notification service sent"
            " it, to store against its registration in the DVS."
        ),
    ),
    Topic(
        name="dvs.documents.registered.v1",
        key="document_key",
        partitions=3,
        producer=DVS,
        consumers=(ALLOCATION,),
        messages=(
            DocumentRegistered,
            DocumentRegistrationFailed,
            DocumentContentStored,
            DocumentContentRejected,
        ),
        description=(
            "Registration numbers assigned by the DVS, or why registration failed; then"
            " whether the DVS verified and stored each document's content."
        ),
    ),
    Topic(
        name="hub.clock.v1",
        key="municipality",
        partitions=1,
        producer=OPERATOR,
        consumers=(ALLOCATION, VPS, VIIS, GIS, DVS, NOTIFY),
        messages=(ClockAdvanced,),
        description=(
            "Moves of a simulation's clock (`hub clock advance|set`): every `hub run` process"
            " with HUB_CLOCK=simulated reads it without a consumer group, from the beginning,"
            " and runs that far ahead of its system clock. Simulations only."
        ),
    ),
)

BY_NAME: Mapping[str, Topic] = {t.name: t for t in TOPICS}
TOPIC_OF: Mapping[type[Message], Topic] = {m: t for t in TOPICS for m in t.messages}
MESSAGE_TYPES: tuple[type[Message], ...] = tuple(TOPIC_OF)


def topic_for(message: Message | type[Message]) -> Topic:
    """The topic a message type is published on."""
    cls = message if isinstance(message, type) else type(message)
    try:
        return TOPIC_OF[cls]
    except KeyError:
        raise LookupError(f"{cls.__name__} is not on any topic of the catalogue") from None


# --------------------------------------------------------------------------- infrastructure topics
# They carry copies of other topics' messages, with headers that say why.

DEAD_LETTERS = "hub.deadletter.v1"
"""Messages no service could handle: the original bytes and key, with dlq-* headers."""


def retry_topic(service: str) -> str:
    """Where a service parks messages that failed transiently, until they are due again."""
    return f"{service}.retry.v1"


INFRASTRUCTURE_PARTITIONS = 3
