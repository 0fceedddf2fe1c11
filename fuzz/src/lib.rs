//! What every fuzz target shares.

/// Makes a stack overflow a crash libFuzzer reports, with the input written to `artifacts/<target>/`.
///
/// The targets are built without a sanitizer, so nothing gives libFuzzer's SIGSEGV handler a stack of its own: an
/// overflow killed the process (exit 139) before the handler could save the input. libFuzzer keeps `SA_ONSTACK`
/// when it replaces the default handler, so this sets the default one with that flag, and an alternate stack.
/// Call it from the target's `init`, which libFuzzer runs before it installs its handlers.
pub fn report_stack_overflows() {
    const SIZE: usize = 1 << 20;
    let stack: &'static mut [u8] = Box::leak(vec![0u8; SIZE].into_boxed_slice());
    // SAFETY: the alternate stack is leaked, so it outlives every signal; the actions are plain SIG_DFL.
    unsafe {
        let alternate = libc::stack_t { ss_sp: stack.as_mut_ptr().cast(), ss_flags: 0, ss_size: SIZE };
        assert_eq!(libc::sigaltstack(&alternate, std::ptr::null_mut()), 0, "sigaltstack");
        for signal in [libc::SIGSEGV, libc::SIGBUS] {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            action.sa_flags = libc::SA_ONSTACK;
            assert_eq!(libc::sigaction(signal, &action, std::ptr::null_mut()), 0, "sigaction");
        }
    }
}
