// TCM_CPU_CLONES before a function definition compiles it once per x86-64
// level (x86-64-v4: AVX-512; x86-64-v3: AVX2 and FMA; baseline), and GCC's
// ifunc dispatch picks the best one this CPU has, once, at load. Results are
// the same on one machine and may differ in the last bit between CPU kinds.
// Elsewhere (other compilers or targets) the function is compiled once.
#ifndef TCM_MODEL_CPU_CLONES_H_
#define TCM_MODEL_CPU_CLONES_H_

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TCM_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TCM_CPU_CLONES
#endif

#endif  // TCM_MODEL_CPU_CLONES_H_
