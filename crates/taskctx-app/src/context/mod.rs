//! Task contexts (SPEC §5): the AIECS `TaskContext`, done right.
