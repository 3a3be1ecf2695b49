//! libFuzzer entry for [`chatroom_fuzz::cluster_frames`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz::cluster_frames(data));
