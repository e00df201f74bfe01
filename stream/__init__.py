"""riskstream's streaming service: the Faust app, its codecs, the audit writer and the command line.

Read it in the order a transaction travels:

1. ``schemas/`` and :mod:`stream.codec`, :mod:`stream.validation`: Avro events in (plain or Confluent
   framing); what cannot be read or is impossible becomes a dead-letter record.
2. :mod:`stream.app`: the agents. Ingest re-keys transactions and labels by terminal; the terminal stage
   keeps terminal state and adds terminal features; the score stage keeps card state, scores a batch
   with one model call and explains the alerts.
3. :mod:`stream.pipeline`: what those agents do, as plain functions (features come from
   :mod:`models.features`, scores from :mod:`models.registry`, reasons from :mod:`explain`);
   :mod:`stream.privacy` turns card ids into keyed tokens before anything leaves the worker.
4. :mod:`stream.audit_writer`: the one process that appends decisions and labels to the DuckDB store
   (:mod:`audit`), reading each poll of decisions in one go (:mod:`stream.avro_batch`).
5. :mod:`stream.rollout`: the registry pointers a worker follows and the shadow model's scores;
   :mod:`stream.learning`: retraining a challenger and replaying decisions from the audit store.
6. :mod:`stream.cli`, :mod:`stream.producer`, :mod:`stream.demo`: the ``riskstream`` command.
"""
