#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    lunledger_fuzz::targets::open_journal_dir::run(data);
});
