//! `y = x · Wᵀ` per format and kernel set, on SmolLM2-135M shapes (576×1536, 1536×576) and the
//! LLaMA-7B square (4096×4096), for both products: `matmul` (activations quantised to 8 bits,
//! llama.cpp's arithmetic) and `matmul_exact` (f32 activations). n = 1 (decode) is reported as
//! µs and GB/s of weights read; n = 128 (prefill) as GFLOP/s (2·rows·cols·n per product). Also
//! measures the machine's memory read bandwidth (a 1 GiB read-sum) so that GB/s can be stated as
//! a fraction of it.
//!
//! In the table, n = 1 products stream their weights from memory (copies of the matrix totalling
//! ≥ 64 MiB, twice the L3, are used in turn; `ZOO_QUANT_BENCH_WARM=1` reuses one matrix instead).
//!
//! `cargo bench -p zoo-quant --bench matmul` runs it under criterion (filter as usual, e.g.
//! `-- q4_0/4096`, `-- exact`). With `ZOO_QUANT_BENCH_TABLE=1` it prints one markdown table
//! instead (median of repeated runs; quicker); `ZOO_QUANT_BENCH_FORMATS=q4_0,q8_0`,
//! `ZOO_QUANT_BENCH_SETS=avx2,avx512` and `ZOO_QUANT_BENCH_SHAPES=576x1536,4096x4096` restrict
//! either mode; `ZOO_QUANT_BENCH_THREADS=1,2` runs the table on pools of those sizes (default:
//! rayon's global pool); `ZOO_QUANT_BENCH_N=16` measures another n than 128 in the prefill
//! columns; `ZOO_QUANT_BENCH_STAT=min` reports the fastest run instead of the median.
//! `ZOO_QUANT_BENCH_TABLE=decode` times the matrix products of a SmolLM2-135M decode step
//! instead (both products, per thread count); `ZOO_QUANT_BENCH_GAP_US=30` busy-waits that many
//! µs on the calling thread between its products, as a model's element-wise ops do between
//! them (the pool's helpers must then be woken for every product).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use zoo_quant::{KernelSet, QMatrix, QType};

const SHAPES: [(usize, usize); 3] = [(576, 1536), (1536, 576), (4096, 4096)];

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

/// Builds a matrix by quantising rows in parallel (the K-quant reference quantisers are slow).
fn matrix(t: QType, rows: usize, cols: usize) -> QMatrix {
    let v = values(rows * cols, (rows * 31 + cols) as u64);
    let chunk = 64;
    let parts: Vec<Vec<u8>> = v
        .par_chunks(chunk * cols)
        .map(|c| {
            QMatrix::quantize(t, c.len() / cols, cols, c)
                .unwrap()
                .bytes()
                .to_vec()
        })
        .collect();
    QMatrix::new(t, rows, cols, zoo_quant::Storage::Owned(parts.concat())).unwrap()
}

fn shapes() -> Vec<(usize, usize)> {
    match std::env::var("ZOO_QUANT_BENCH_SHAPES") {
        Ok(s) => s
            .split(',')
            .filter_map(|p| {
                let (r, c) = p.split_once('x')?;
                Some((r.trim().parse().ok()?, c.trim().parse().ok()?))
            })
            .collect(),
        Err(_) => SHAPES.to_vec(),
    }
}

fn formats() -> Vec<QType> {
    match std::env::var("ZOO_QUANT_BENCH_FORMATS") {
        Ok(s) => s.split(',').filter_map(QType::from_name).collect(),
        Err(_) => QType::ALL.to_vec(),
    }
}

fn sets() -> Vec<KernelSet> {
    let all = KernelSet::available();
    match std::env::var("ZOO_QUANT_BENCH_SETS") {
        Ok(s) => s
            .split(',')
            .filter_map(KernelSet::from_name)
            .filter(|k| all.contains(k))
            .collect(),
        Err(_) => all,
    }
}

/// Read bandwidth: GB/s of a read-sum over 1 GiB, on one thread and on rayon's pool.
fn bandwidth() -> (f64, f64) {
    let words = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let one = || {
        let t = Instant::now();
        let s: u64 = buf.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        black_box(s);
        t.elapsed()
    };
    let all = || {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 20)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, |a, b| a.wrapping_add(b));
        black_box(s);
        t.elapsed()
    };
    let best = |f: &dyn Fn() -> Duration| (0..5).map(|_| f()).min().unwrap();
    let gb = (words * 8) as f64 / 1e9;
    (gb / best(&one).as_secs_f64(), gb / best(&all).as_secs_f64())
}

/// Median (or, with `ZOO_QUANT_BENCH_STAT=min`, minimum: robust on a busy machine) time of `f`
/// over repeated runs taking about `budget`.
fn median(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let t = Instant::now();
    f();
    let once = t.elapsed().max(Duration::from_nanos(100));
    let runs = (budget.as_secs_f64() / once.as_secs_f64()).clamp(5.0, 20_000.0) as usize;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    if std::env::var("ZOO_QUANT_BENCH_STAT").is_ok_and(|s| s == "min") {
        times[0]
    } else {
        times[runs / 2]
    }
}

/// Which product a measurement runs.
#[derive(Clone, Copy, PartialEq)]
enum Product {
    /// `matmul`: activations quantised to 8 bits.
    Q8,
    /// `matmul_exact`: f32 activations.
    Exact,
}

fn product(p: Product, m: &QMatrix, set: KernelSet, x: &[f32], n: usize, y: &mut [f32]) {
    match p {
        Product::Q8 => m.matmul_with(set, x, n, y),
        Product::Exact => m.matmul_exact_with(set, x, n, y),
    }
}

/// Time per product of `n = 1` with weights streamed from memory: enough copies of the matrix
/// to exceed the last-level cache twice over are used in turn (one copy would stay in L3 and
/// measure the cache, not the memory).
fn cold_gemv(ms: &[QMatrix], p: Product, set: KernelSet) -> Duration {
    let (rows, cols) = (ms[0].rows(), ms[0].cols());
    let x = values(cols, 5);
    let mut y = vec![0f32; rows];
    median(Duration::from_millis(600), || {
        for m in ms {
            product(p, m, set, black_box(&x), 1, &mut y);
        }
    }) / ms.len() as u32
}

/// The pools to run the table on: `ZOO_QUANT_BENCH_THREADS=1,2`, else rayon's global pool.
fn pools() -> Vec<(usize, Option<rayon::ThreadPool>)> {
    match std::env::var("ZOO_QUANT_BENCH_THREADS") {
        Ok(s) => s
            .split(',')
            .filter_map(|t| t.trim().parse::<usize>().ok())
            .map(|t| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .expect("a thread pool");
                (t, Some(pool))
            })
            .collect(),
        Err(_) => vec![(rayon::current_num_threads(), None)],
    }
}

fn in_pool<R: Send>(pool: &Option<rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

fn table() {
    let (bw1, bwn) = bandwidth();
    println!(
        "memory read bandwidth (1 GiB read-sum): {bw1:.1} GB/s on 1 thread, {bwn:.1} GB/s on {} threads\n",
        rayon::current_num_threads()
    );
    println!("kernel set in use: {}\n", zoo_quant::cpu_features());
    let big_n: usize = std::env::var("ZOO_QUANT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    println!(
        "| format | rows×cols | threads | kernels | n=1 µs matmul | n=1 µs exact | n=1 GB/s matmul | n=1 GB/s exact | n={big_n} GFLOP/s matmul | n={big_n} GFLOP/s exact |"
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|---:|---:|");
    // `ZOO_QUANT_BENCH_ONLY=1` or `=128` runs just one of the two (for profiling);
    // `ZOO_QUANT_BENCH_PRODUCTS=exact` (or `q8`) just one product.
    let only = std::env::var("ZOO_QUANT_BENCH_ONLY").unwrap_or_default();
    let products: Vec<Product> = match std::env::var("ZOO_QUANT_BENCH_PRODUCTS").as_deref() {
        Ok("exact") => vec![Product::Exact],
        Ok("q8") => vec![Product::Q8],
        _ => vec![Product::Q8, Product::Exact],
    };
    let pools = pools();
    for t in formats() {
        for (rows, cols) in shapes() {
            if t.row_bytes(cols).is_none() {
                println!(
                    "| {t} | {rows}×{cols} | – | – | {cols} columns are not whole blocks |||||||"
                );
                continue;
            }
            let m = matrix(t, rows, cols);
            let copies = if std::env::var_os("ZOO_QUANT_BENCH_WARM").is_some() {
                1
            } else {
                (64usize << 20).div_ceil(m.bytes().len()).max(2)
            };
            let ms: Vec<QMatrix> = (0..copies).map(|_| m.clone()).collect();
            let xn = values(big_n * cols, 6);
            let mut yn = vec![0f32; big_n * rows];
            for (threads, pool) in &pools {
                for set in sets() {
                    let mut cells = [f64::NAN; 6];
                    for (i, &p) in [Product::Q8, Product::Exact].iter().enumerate() {
                        if !products.contains(&p) {
                            continue;
                        }
                        if only != "128" {
                            let d1 = in_pool(pool, || cold_gemv(&ms, p, set));
                            cells[i] = d1.as_secs_f64() * 1e6;
                            cells[2 + i] = m.bytes().len() as f64 / d1.as_secs_f64() / 1e9;
                        }
                        if only != "1" {
                            let dn = in_pool(pool, || {
                                median(Duration::from_millis(600), || {
                                    product(p, &m, set, black_box(&xn), big_n, &mut yn)
                                })
                            });
                            cells[4 + i] =
                                2.0 * (rows * cols * big_n) as f64 / dn.as_secs_f64() / 1e9;
                        }
                    }
                    let f = |v: f64, prec: usize| {
                        if v.is_nan() {
                            "–".to_string()
                        } else {
                            format!("{v:.prec$}")
                        }
                    };
                    println!(
                        "| {t} | {rows}×{cols} | {threads} | {} | {} | {} | {} | {} | {} | {} |",
                        set.features(),
                        f(cells[0], 1),
                        f(cells[1], 1),
                        f(cells[2], 1),
                        f(cells[3], 1),
                        f(cells[4], 0),
                        f(cells[5], 0),
                    );
                }
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    {
        let (bw1, bwn) = bandwidth();
        eprintln!("memory read bandwidth: {bw1:.1} GB/s (1 thread), {bwn:.1} GB/s (all threads)");
    }
    for t in formats() {
        for (rows, cols) in shapes() {
            if t.row_bytes(cols).is_none() {
                continue;
            }
            let m = matrix(t, rows, cols);
            let x1 = values(cols, 5);
            let xn = values(128 * cols, 6);
            let mut y1 = vec![0f32; rows];
            let mut yn = vec![0f32; 128 * rows];
            for (p, name) in [(Product::Q8, "matmul"), (Product::Exact, "exact")] {
                let mut g = c.benchmark_group(format!("{t}/{rows}x{cols}/n1/{name}"));
                g.throughput(Throughput::Bytes(m.bytes().len() as u64));
                for set in sets() {
                    g.bench_with_input(BenchmarkId::from_parameter(set.name()), &set, |b, &set| {
                        b.iter(|| product(p, &m, set, black_box(&x1), 1, &mut y1))
                    });
                }
                g.finish();
                let mut g = c.benchmark_group(format!("{t}/{rows}x{cols}/n128/{name}"));
                // "elements" here are floating-point operations: 2·rows·cols·n.
                g.throughput(Throughput::Elements(2 * (rows * cols * 128) as u64));
                g.sample_size(10);
                for set in sets() {
                    g.bench_with_input(BenchmarkId::from_parameter(set.name()), &set, |b, &set| {
                        b.iter(|| product(p, &m, set, black_box(&xn), 128, &mut yn))
                    });
                }
                g.finish();
            }
        }
    }
}

/// The matrix products of one SmolLM2-135M decode step: 30 layers of q, k, v, o (576×576,
/// 192×576 ×2, 576×576), gate, up (1536×576) and down (576×1536) in Q4_1, and the tied Q8_0
/// embedding (49152×576) as the LM head: 96 MB of weights, more than the L3 cache.
fn decode() {
    let layers = 30;
    let shapes = [
        (576, 576),
        (192, 576),
        (192, 576),
        (576, 576),
        (1536, 576),
        (1536, 576),
        (576, 1536),
    ];
    let weights: Vec<Vec<QMatrix>> = (0..layers)
        .map(|_| {
            shapes
                .iter()
                .map(|&(r, c)| matrix(QType::Q4_1, r, c))
                .collect()
        })
        .collect();
    let head = matrix(QType::Q8_0, 49152, 576);
    let bytes: usize = weights
        .iter()
        .flatten()
        .map(|m| m.bytes().len())
        .sum::<usize>()
        + head.bytes().len();
    let x576 = values(576, 1);
    let x1536 = values(1536, 2);
    let mut y = vec![0f32; 49152];
    println!(
        "SmolLM2-135M decode step, matrix products only: {} products, {:.1} MB of weights",
        layers * shapes.len() + 1,
        bytes as f64 / 1e6,
    );
    let gap = Duration::from_micros(
        std::env::var("ZOO_QUANT_BENCH_GAP_US")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    );
    let wait = |d: Duration| {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    };
    for (threads, pool) in pools() {
        for set in sets() {
            for (p, name) in [(Product::Q8, "matmul"), (Product::Exact, "matmul_exact")] {
                let mut step = || {
                    for layer in &weights {
                        for m in layer {
                            let x = if m.cols() == 576 { &x576 } else { &x1536 };
                            product(p, m, set, black_box(x), 1, &mut y[..m.rows()]);
                            wait(gap);
                        }
                    }
                    product(p, &head, set, black_box(&x576), 1, &mut y);
                };
                let d = in_pool(&pool, || median(Duration::from_secs(3), &mut step));
                println!(
                    "  {threads} thread(s) {:<10} {:<12} {:8.0} µs/token  {:6.1} tokens/s  {:5.1} GB/s",
                    set.features(),
                    name,
                    d.as_secs_f64() * 1e6,
                    1.0 / d.as_secs_f64(),
                    bytes as f64 / d.as_secs_f64() / 1e9
                );
            }
        }
    }
}

fn main() {
    match std::env::var("ZOO_QUANT_BENCH_TABLE").as_deref() {
        Ok("decode") => return decode(),
        Ok(_) => return table(),
        Err(_) => {}
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
