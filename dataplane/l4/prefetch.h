#pragma once

/// @file
/// Cache-line prefetch that the compiler cannot drop.
///
/// GCC 12 (Debian 12's compiler) treats __builtin_prefetch as free of side effects when it
/// infers function attributes: a function whose only effect is a prefetch is found "pure",
/// and since it returns nothing, every call to it is deleted as dead code. That silently
/// removed ConnTrack::prefetch() and with it the whole burst prefetch stage of the worker
/// (found 2026-11-28 by reading l4_bench's disassembly: no prefetch instruction left).
/// An `asm volatile` is never deleted; this is what DPDK's rte_prefetch0() does too.
/// Thread: any; no memory access happens (a prefetch of a bad address does not fault).

/// Forces a hot-path helper inline. GCC's -O2 heuristics keep the parse, lookup and
/// rewrite helpers out of line (they are large), and every call on the per-packet path then
/// pays register saves and reloads: l4_bench measured ~40 cycles per packet of that.
#define SLUICE_ALWAYS_INLINE [[gnu::always_inline]] inline

namespace sluice::dp {

/// Prefetches the line holding `p` into all cache levels, for reading.
inline void prefetch_read(const void* p) noexcept {
#if defined(__x86_64__) || defined(__i386__)
    asm volatile("prefetcht0 %0" : : "m"(*static_cast<const volatile char*>(p)));
#elif defined(__aarch64__)
    asm volatile("prfm pldl1keep, %0" : : "Q"(*static_cast<const volatile char*>(p)));
#else
    __builtin_prefetch(p, 0, 3);
#endif
}

/// Prefetches the line holding `p` for writing (PREFETCHW: the line arrives exclusive, so
/// the store that follows needs no second coherence step). Falls back to a read prefetch.
inline void prefetch_write(const void* p) noexcept {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__PRFCHW__)
    asm volatile("prefetchw %0" : : "m"(*static_cast<const volatile char*>(p)));
#else
    prefetch_read(p);
#endif
}

} // namespace sluice::dp
