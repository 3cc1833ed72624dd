"""Admission rounds, offers and parents' responses."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from schemas.base import Command, Event, FrozenModel, type_name
from schemas.values import (
    ApplicationId,
    ChildRef,
    GroupCode,
    InstitutionId,
    LanguageCode,
    OfferId,
    RoundId,
    UtcDatetime,
)

ResponseChannel = Literal["e_service", "client_service_centre"]


class RunRound(Command):
    """Build the admission list of a municipality as of a date ("one click")."""

    event_type: Literal["RunRound"] = type_name("RunRound")
    round_id: RoundId
    round_date: date = Field(description="Priority facts and ages are evaluated as of this date.")
    requested_by: str = Field(min_length=1, max_length=64, description="Operator user name.")


class _OfferRef(FrozenModel):
    offer_id: OfferId
    child_ref: ChildRef


class OfferMade(_OfferRef, Event):
    """A child is offered a seat; the response deadline runs from notification."""

    event_type: Literal["OfferMade"] = type_name("OfferMade")
    round_id: RoundId | None = Field(description="Round that made the offer; None for a cascade.")
    application_id: ApplicationId
    institution_id: InstitutionId
    group_code: GroupCode
    language: LanguageCode
    start_date: date = Field(description="First day of attendance.")
    preference_rank: int | None = Field(
        ge=1, description="Position of the institution in the child's list; None if not listed."
    )
    response_days: int = Field(
        ge=1, le=90, description="Calendar days to respond, counted from the day deemed notified."
    )
    respond_by: date | None = Field(
        default=None, description="Deadline, once the notification date is known."
    )


class OfferDeadlineSet(_OfferRef, Event):
    """The parents were (deemed) notified: the offer must be answered by ``respond_by``."""

    event_type: Literal["OfferDeadlineSet"] = type_name("OfferDeadlineSet")
    notified_on: date = Field(description="Day the parents were notified or deemed notified.")
    respond_by: date = Field(description="Last day to accept or decline.")


class OfferRevoked(_OfferRef, Event):
    """An offer no longer stands: withdrawn by the hub before the parents answered, or a place
    they had accepted and gave up by accepting one they ranked higher (``superseded``)."""

    event_type: Literal["OfferRevoked"] = type_name("OfferRevoked")
    reason: Literal["application_withdrawn", "capacity_reduced", "superseded", "facts_changed"] = (
        Field(description="Why the offer no longer stands.")
    )


class OfferExpired(_OfferRef, Event):
    """The deadline passed without an answer; the seat goes to the next child."""

    event_type: Literal["OfferExpired"] = type_name("OfferExpired")
    respond_by: date = Field(description="The deadline that passed.")


class OfferDeclined(_OfferRef, Event):
    """The parent's decline was applied; the seat goes to the next child."""

    event_type: Literal["OfferDeclined"] = type_name("OfferDeclined")
    declined_at: UtcDatetime = Field(description="When the parent declined.")


class PlaceAccepted(_OfferRef, Event):
    """The parent accepted; the seat is the child's."""

    event_type: Literal["PlaceAccepted"] = type_name("PlaceAccepted")
    application_id: ApplicationId
    institution_id: InstitutionId
    group_code: GroupCode
    start_date: date = Field(description="First day of attendance.")
    accepted_at: UtcDatetime = Field(description="When the parent accepted.")


OFFER_CLOSED = (OfferDeclined, OfferExpired, OfferRevoked, PlaceAccepted)
"""The events that close an offer: after one of them it is never live again."""


class InstitutionFill(FrozenModel):
    """Seats and offers of one institution after a round."""

    institution_id: InstitutionId
    capacity: int = Field(ge=0, description="Seats for new children in all groups.")
    offered: int = Field(ge=0, description="Seats under a live offer.")
    accepted: int = Field(ge=0, description="Seats taken by accepted offers.")


class RoundCompleted(Event):
    """Summary of an admission round."""

    event_type: Literal["RoundCompleted"] = type_name("RoundCompleted")
    round_id: RoundId
    round_date: date = Field(description="Date the round was evaluated for.")
    applications_considered: int = Field(ge=0, description="Applications in the queue.")
    offers_made: int = Field(ge=0, description="Offers the round made.")
    children_unplaced: int = Field(ge=0, description="Children left without an offer.")
    lottery_seed: int = Field(description="Published seed of the tie-break lottery.")
    institutions: tuple[InstitutionFill, ...] = Field(
        default=(), description="Fill per institution."
    )
    facts_rechecked: int = Field(
        default=0, ge=0, description="Children whose facts were verified again for the round."
    )
    facts_changed: int = Field(
        default=0, ge=0, description="Facts found changed at that check (residence, VIIS)."
    )
    facts_unverified: int = Field(
        default=0,
        ge=0,
        description="Children left out of the list: a register did not answer in time.",
    )


class _Response(_OfferRef, Event):
    responded_at: UtcDatetime = Field(description="When the parent answered.")
    channel: ResponseChannel = Field(default="e_service", description="Where the parent answered.")


class ParentAccepted(_Response):
    """A parent accepted an offer in the e-service or at a client service centre."""

    event_type: Literal["ParentAccepted"] = type_name("ParentAccepted")


class ParentDeclined(_Response):
    """A parent declined an offer."""

    event_type: Literal["ParentDeclined"] = type_name("ParentDeclined")
    reason: str | None = Field(default=None, max_length=500, description="Reason the parent gave.")


class StepTaken(Event):
    """One step of the allocation service's state, in the order the service took it.

    A step is either a message the service applied (its ``event_id`` is this
    entry's ``causation_id``) or a clock tick that expired offers. Applying
    the same messages in the same order with the same clock readings gives
    the same state, which is how ``hub allocation rebuild`` rebuilds it.
    The journal may hold an entry twice (at-least-once publishing): the
    ``sequence`` number identifies it.
    """

    event_type: Literal["StepTaken"] = type_name("StepTaken")
    sequence: int = Field(
        ge=1, description="The step's number: steps are replayed in this order (gaps allowed)."
    )
    step: Literal["message", "clock"] = Field(description="A message applied, or a clock tick.")
    source_topic: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._-]{0,248}$",
        description="Topic the applied message was read from (None for a clock tick).",
    )
    at: UtcDatetime = Field(description="The service's clock when it took the step.")
