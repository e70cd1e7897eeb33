//! The context builder (SPEC §6): `ContextBuilderService` and its strategies, budget, formatter,
//! redactor and summariser.
