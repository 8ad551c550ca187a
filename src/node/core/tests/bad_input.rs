use proptest::prelude::*;

use crate::node::core::fuzzing::node_core;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random events, garbage packets, registry answers and clock jumps
    /// (the wall clock both ways): no panic, and the invariants hold after
    /// every input (the script's interpreter checks them).
    #[test]
    fn any_input_sequence_keeps_node_core_sound(
        script in proptest::collection::vec(any::<u8>(), 0..1500)
    ) {
        node_core(&script);
    }
}
