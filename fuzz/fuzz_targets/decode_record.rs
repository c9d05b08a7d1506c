#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lunledger_test_support::targets::decode_record::run(data);
});
