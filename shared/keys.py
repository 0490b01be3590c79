"""Every Redis key this project uses, in one place, under one prefix.

Keys of one limiter share a hash tag (`{prefix:limiter}`) so the Lua scripts that touch several of
them stay valid on Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "fleet"

    # --- limiter -------------------------------------------------------------------------------
    @property
    def limiter(self) -> str:
        return f"{{{self.prefix}:limiter}}"

    def limiter_key(self, name: str) -> str:
        return f"{self.limiter}:{name}"

    # --- batch ledger --------------------------------------------------------------------------
    @property
    def batches(self) -> str:
        return f"{self.prefix}:batches"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def batch_key(self, batch_id: str, name: str) -> str:
        return f"{self.prefix}:batch:{batch_id}:{name}"

    def item(self, batch_id: str, index: int) -> str:
        return f"{self.prefix}:batch:{batch_id}:item:{index}"

    def batch_live(self, batch_id: str) -> str:
        """Zset of the batch's non-terminal items (index -> last sign of life, Unix time): the
        recovery sweep reads only the stale end of it instead of every item."""
        return f"{self.prefix}:batch:{batch_id}:live"

    @property
    def staged_batches(self) -> str:
        """Set of recorded batches whose items may still expire (their producer died before it
        persisted them; the recovery sweep finishes the job)."""
        return f"{self.batches}:staged"

    def fingerprint(self, fingerprint: str) -> str:
        """The latest batch with this content (shared.ledger.identity.batch_fingerprint)."""
        return f"{self.prefix}:fingerprint:{fingerprint}"

    @property
    def sweeper_lock(self) -> str:
        """Held by the one worker that runs the recovery sweep this round."""
        return f"{self.prefix}:sweeper"

    # --- cost safety -----------------------------------------------------------------------------
    def attempt(self, batch_id: str, index: int, attempt: int) -> str:
        return f"{self.prefix}:attempt:{batch_id}:{index}:{attempt}"

    def claim(self, batch_id: str, index: int, attempt: int) -> str:
        return f"{self.prefix}:claim:{batch_id}:{index}:{attempt}"

    def unresolved_creates(self, model: str) -> str:
        """The attempts that wrote an intent to create on `model` (zset: marker -> intent time):
        where a held sync create of a canceled batch looks for the unresolved creates of other
        batches whose prediction could match the one it is about to cancel. The last hour's."""
        return f"{self.prefix}:unresolved:{model}"

    def prediction_owner(self, prediction_id: str) -> str:
        """Which (batch, item, attempt) a prediction belongs to, so reconciliation never adopts
        another item's prediction with an identical input."""
        return f"{self.prefix}:prediction:{prediction_id}"

    def written(self, batch_id: str, index: int) -> str:
        """Output keys an item's runs have written (key -> sha256): a later attempt of the same
        item may replace its own earlier output, never another's."""
        return f"{self.prefix}:batch:{batch_id}:written:{index}"

    def uploads(self, batch_id: str, index: int) -> str:
        """Reference files already uploaded for an item (path -> URL): retries reuse them, so
        the input (and the duplicate check) stays the same across attempts."""
        return f"{self.prefix}:batch:{batch_id}:uploads:{index}"

    # --- completions (webhooks) --------------------------------------------------------------------
    def completion(self, prediction_id: str) -> str:
        """The terminal prediction as a webhook delivered it (kept briefly for its waiter)."""
        return f"{self.prefix}:completion:{prediction_id}"

    def completion_watch(self, prediction_id: str) -> str:
        """The wake list of the process waiting for this prediction."""
        return f"{self.prefix}:completion-watch:{prediction_id}"

    def completion_wake(self, process: str) -> str:
        return f"{self.prefix}:completion-wake:{process}"

    def webhook_delivery(self, webhook_id: str) -> str:
        """A delivery's webhook-id, kept while a replay of it could still pass the timestamp check."""
        return f"{self.prefix}:webhook-seen:{webhook_id}"

    # --- model schemas ---------------------------------------------------------------------------
    def model_schema(self, ref: str) -> str:
        """A model reference's published schema (JSON), shared by the fleet, with a TTL."""
        return f"{self.prefix}:schema:{ref}"

    def model_schema_lock(self, ref: str) -> str:
        """Held by the one process reading that schema from Replicate; the others wait for it."""
        return f"{self.prefix}:schema-lock:{ref}"

    # --- worker statistics ---------------------------------------------------------------------
    @property
    def workers(self) -> str:
        """Hash "host:pid" -> the wait mode that worker process runs in (shared.presence)."""
        return f"{self.prefix}:workers"

    @property
    def model_latency(self) -> str:
        """Hash model -> smoothed prediction duration in seconds (the first poll and a sync
        create's wait are chosen by it)."""
        return f"{self.prefix}:latency"
