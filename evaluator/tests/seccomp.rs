//! The payload's seccomp allow list in real sandboxes (root required): each runtime's
//! own smoke test and typical snippets (threads, processes, files in /work and /tmp,
//! loopback sockets, time, randomness, signals, GC) still work under it, and what it
//! leaves out fails from inside with the errno the filter promises.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, Run};
use evaluator::access::catalog::Catalog;
use evaluator::lang::Launch;
use evaluator::runtime::Runtime;
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::{Component, Output};

fn one(code: &str) -> Vec<Component> {
    vec![Component {
        id: "c1".into(),
        code: code.into(),
    }]
}

/// Roomier than the defaults: these snippets start threads, child processes and, for
/// Java, a second JVM, on a machine other suites share.
fn limits() -> Limits {
    Limits {
        wall_time: Duration::from_secs(120),
        cpu_time: Duration::from_secs(120),
        memory_bytes: 768 << 20,
        max_processes: 128,
        cpu_millis: 2000,
        ..Limits::default()
    }
}

/// Everything the snippet reported besides its stdout: stderr, exceptions,
/// diagnostics, violations and internal errors.
fn problems(run: &Run) -> Vec<String> {
    run.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Stderr { data, .. } => Some(String::from_utf8_lossy(data).into_owned()),
            Output::Exception { traceback, .. } => Some(traceback.clone()),
            Output::Diagnostic { message, .. }
            | Output::Violation { message, .. }
            | Output::Internal { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Runs a snippet that prints one `name=ok` line per check and ends with `checks=done`;
/// asserts it finished cleanly with every expected check present and ok.
fn assert_checks(run: &Run, expected: &[&str]) {
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    let stdout = run.stdout();
    assert!(
        stdout.lines().any(|l| l == "checks=done"),
        "the snippet did not finish:\n{stdout}\n{:#?}",
        problems(run)
    );
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains('=') && !l.ends_with("=ok") && *l != "checks=done")
        .collect();
    assert!(
        failed.is_empty(),
        "checks failed: {failed:#?}\n{stdout}\n{:#?}",
        problems(run)
    );
    for name in expected {
        assert!(
            stdout.lines().any(|l| l == format!("{name}=ok")),
            "check {name} missing:\n{stdout}"
        );
    }
}

/// The names of the checks a snippet runs: each `check("name", …)` or
/// `check('name', …)` call.
fn check_names(code: &str) -> Vec<&str> {
    let names: Vec<&str> = code
        .split("check(")
        .skip(1)
        .filter_map(|s| {
            let quote = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            s[1..].split(quote).next()
        })
        .collect();
    assert!(!names.is_empty(), "no check( calls");
    names
}

/// The runtime's own `runtime test` snippet, held to the runtime's access list.
async fn smoke_test(fx: &Fixture, runtime: &Runtime) {
    let mut launch = runtime.launch();
    if let Some(list) = runtime.access_list() {
        launch.access_list = Some(Arc::new(Catalog::new(None).load(list).unwrap()));
    }
    let (code, expected) = runtime.smoke_test();
    let run = fx.eval_launch(&launch, one(code), limits()).await;
    assert_eq!(
        run.outcome.status,
        Status::Ok,
        "{}: {run:#?}",
        runtime.name()
    );
    assert_eq!(run.stdout(), expected, "{}: {run:#?}", runtime.name());
    assert!(problems(&run).is_empty(), "{}: {run:#?}", runtime.name());
}

const PYTHON: &str = r#"
import asyncio, concurrent.futures, ctypes, datetime, fcntl, gc, hashlib, mmap, multiprocessing
import os, random, resource, secrets, select, selectors, shutil, signal, socket, sqlite3
import subprocess, sys, tempfile, threading, time

def check(name, f):
    try:
        v = f()
        print(f"{name}=ok" if v else f"{name}=FAIL: returned {v!r}", flush=True)
    except Exception as e:
        print(f"{name}=FAIL: {type(e).__name__}: {e}", flush=True)

def threads():
    out = [0] * 8
    def work(i):
        out[i] = sum(range(10000 * (i + 1)))
    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    ev = threading.Event()
    threading.Timer(0.01, ev.set).start()
    return all(out) and ev.wait(10)
check("threads", threads)
check("thread_pool", lambda: list(concurrent.futures.ThreadPoolExecutor(4).map(abs, [-1, -2])) == [1, 2])
check("subprocess", lambda: subprocess.run([sys.executable, "-c", "print('child')"], capture_output=True, timeout=60).stdout == b"child\n")
def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return os.waitpid(pid, 0)[1] >> 8 == 7
check("fork", fork)
def mp_child(q):
    q.put(os.getpid())
def mp():
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=mp_child, args=(q,))
    p.start()
    got = q.get(timeout=30)
    p.join()
    with multiprocessing.Pool(2) as pool:
        squares = pool.map(abs, [-1, -2, -3])
    return got > 0 and squares == [1, 2, 3]
check("multiprocessing", mp)

def files(base):
    d = os.path.join(base, "d")
    os.makedirs(os.path.join(d, "e"), exist_ok=True)
    p = os.path.join(d, "f.txt")
    with open(p, "w") as f:
        f.write("x" * 100000)
        f.flush()
        os.fsync(f.fileno())
    os.rename(p, p + ".2")
    shutil.copy2(p + ".2", p)
    shutil.copyfile(p, p + ".3")
    os.symlink(p, p + ".ln")
    os.link(p, p + ".hl")
    ok = os.readlink(p + ".ln") == p and os.stat(p).st_size == 100000 and os.lstat(p + ".ln")
    os.chmod(p, 0o600)
    os.utime(p, (1, 1))
    os.truncate(p + ".3", 10)
    with open(p, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        fcntl.lockf(f, fcntl.LOCK_EX)
        fcntl.lockf(f, fcntl.LOCK_UN)
        with mmap.mmap(f.fileno(), 0) as m:
            m[0:1] = b"y"
    os.mkfifo(os.path.join(d, "fifo"))
    names = sorted(os.listdir(d))
    walked = sum(len(fs) for _, _, fs in os.walk(d))
    with tempfile.NamedTemporaryFile(dir=base) as t:
        t.write(b"abc")
        t.flush()
    st = shutil.disk_usage(base)
    shutil.rmtree(d)
    return ok and names[0] == "e" and walked == 6 and st.total > 0 and not os.path.exists(d)
check("files_work", lambda: files("/work"))
check("files_tmp", lambda: files(tempfile.gettempdir()))
def db():
    c = sqlite3.connect("/work/t.db")
    c.execute("create table t(x)")
    c.executemany("insert into t values (?)", [(i,) for i in range(100)])
    c.commit()
    n = c.execute("select count(*) from t").fetchone()[0]
    c.close()
    os.remove("/work/t.db")
    return n == 100
check("sqlite", db)

def tcp(family, host):
    srv = socket.socket(family)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname()[:2], timeout=10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    a, _ = srv.accept()
    c.sendall(b"ping")
    got = a.recv(4)
    for s in (a, c, srv):
        s.close()
    return got == b"ping"
check("tcp_v4", lambda: tcp(socket.AF_INET, "127.0.0.1"))
check("tcp_v6", lambda: tcp(socket.AF_INET6, "::1"))
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.sendto(b"x", u.getsockname())
    got = u.recvfrom(10)[0]
    u.close()
    return got == b"x"
check("udp", udp)
def unix():
    srv = socket.socket(socket.AF_UNIX)
    srv.bind("/work/s.sock")
    srv.listen()
    c = socket.socket(socket.AF_UNIX)
    c.connect("/work/s.sock")
    a, _ = srv.accept()
    c.send(b"u")
    x, y = socket.socketpair()
    x.send(b"p")
    ok = a.recv(1) == b"u" and y.recv(1) == b"p"
    for s in (a, c, srv, x, y):
        s.close()
    os.remove("/work/s.sock")
    return ok
check("unix", unix)
check("interfaces", lambda: "lo" in [n for _, n in socket.if_nameindex()])
async def echo():
    async def handle(r, w):
        w.write(await r.read(3))
        await w.drain()
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*srv.sockets[0].getsockname())
    w.write(b"abc")
    got = await r.read(3)
    w.close()
    srv.close()
    await srv.wait_closed()
    await asyncio.sleep(0.01)
    return got == b"abc"
check("asyncio", lambda: asyncio.run(echo()))
def multiplex():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, b"z")
    sel = selectors.DefaultSelector()
    sel.register(r, selectors.EVENT_READ)
    ready = sel.select(5)
    p = select.poll()
    p.register(r, select.POLLIN)
    ok = ready and p.poll(1000) and select.select([r], [], [], 1)[0] == [r] and os.read(r, 1) == b"z"
    os.close(r)
    os.close(w)
    return ok
check("multiplex", multiplex)

check("time", lambda: time.time() > 1e9 and time.monotonic() > 0 and time.perf_counter() > 0 and time.process_time() >= 0 and time.thread_time() >= 0 and datetime.datetime.now().year > 2000 and time.localtime().tm_year > 2000 and time.clock_getres(time.CLOCK_MONOTONIC) > 0)
def sleeps():
    t = time.monotonic()
    time.sleep(0.02)
    return time.monotonic() - t >= 0.02
check("sleep", sleeps)
check("random", lambda: len(os.urandom(16)) == 16 and len(secrets.token_hex(8)) == 16 and 0 <= random.SystemRandom().random() < 1 and hashlib.sha256(b"x").digest())
def signals():
    got = []
    signal.signal(signal.SIGUSR1, lambda *a: got.append("usr1"))
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
    signal.signal(signal.SIGALRM, lambda *a: got.append("alrm"))
    signal.setitimer(signal.ITIMER_REAL, 0.01)
    end = time.monotonic() + 10
    while "alrm" not in got and time.monotonic() < end:
        time.sleep(0.005)
    return got.count("usr1") == 2 and "alrm" in got
check("signals", signals)
def limits():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0 and os.times().elapsed != 0
check("rlimits", limits)
check("system_info", lambda: os.cpu_count() > 0 and len(os.sched_getaffinity(0)) > 0 and os.uname().sysname == "Linux" and os.getloadavg() and os.getcwd() == "/work" and os.getuid() != 0 and os.umask(0o22) is not None and not os.isatty(1) and shutil.get_terminal_size())
def memory():
    big = bytearray(64 << 20)
    big[-1] = 1
    del big
    junk = [[i] * 10 for i in range(200000)]
    del junk
    gc.collect()
    m = mmap.mmap(-1, 1 << 20)
    m[:1] = b"x"
    m.close()
    return True
check("memory", memory)
def native():
    libc = ctypes.CDLL(None)
    cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    return libc.getpid() == os.getpid() and cb(41) == 42
check("ctypes", native)
print("checks=done")
"#;

#[tokio::test]
async fn python_works_under_the_allow_list() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    smoke_test(&fx, &python).await;
    let run = fx.eval(&python, one(PYTHON), limits()).await;
    assert_checks(&run, &check_names(PYTHON));
    fx.assert_clean().await;
}

const PYTHON_ML: &str = r#"
import os
def check(name, f):
    try:
        v = f()
        print(f"{name}=ok" if v else f"{name}=FAIL: returned {v!r}", flush=True)
    except Exception as e:
        print(f"{name}=FAIL: {type(e).__name__}: {e}", flush=True)
import numpy, pandas
def numeric():
    a = numpy.random.default_rng(1).random((300, 300))
    return (a @ a).shape == (300, 300) and numpy.linalg.inv(a + numpy.eye(300) * 300).shape == (300, 300)
check("numpy", numeric)
def frames():
    df = pandas.DataFrame({"a": range(1000), "b": ["x", "y"] * 500})
    df.to_csv("/work/f.csv", index=False)
    back = pandas.read_csv("/work/f.csv")
    os.remove("/work/f.csv")
    return back.groupby("b")["a"].sum().to_dict() == df.groupby("b")["a"].sum().to_dict() and df.describe().shape == (8, 1)
check("pandas", frames)
print("checks=done")
"#;

/// Whether the runtime `name` is built already, or can be: `can_build` says.
fn available(name: &str, can_build: impl FnOnce() -> bool, why_not: &str) -> bool {
    let built = evaluator::runtime::Registry::load(&common::runtimes_dir())
        .resolve(name)
        .is_ok();
    if built || can_build() {
        return true;
    }
    eprintln!("skipped: {name} is not built and cannot be built here: {why_not}");
    false
}

fn pypi_reachable() -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    ("pypi.org", 443)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok())
}

/// numpy and pandas in the python-3.11-ml runtime, when it is built or can be (its
/// build downloads the wheels from PyPI).
#[tokio::test]
async fn python_ml_works_under_the_allow_list() {
    if !available("python-3.11-ml", pypi_reachable, "PyPI is out of reach") {
        return;
    }
    let fx = Fixture::new();
    // Its build ran pip (with the network) in a builder sandbox under the same filter.
    let ml = fx.runtime("python-3.11-ml").await;
    smoke_test(&fx, &ml).await;
    let run = fx.eval(&ml, one(PYTHON_ML), limits()).await;
    assert_checks(&run, &check_names(PYTHON_ML));
    fx.assert_clean().await;
}

const JAVA: &str = r#"
import java.net.*;
import java.nio.*;
import java.nio.channels.*;
import java.nio.file.*;
import java.security.*;
import java.time.*;
import java.util.concurrent.*;
import java.util.stream.*;

void check(String name, Callable<Boolean> f) {
    try {
        System.out.println(f.call() ? name + "=ok" : name + "=FAIL: returned false");
    } catch (Throwable e) {
        System.out.println(name + "=FAIL: " + e);
    }
}

check("println", () -> { System.out.println("hello"); System.err.flush(); return true; });
check("threads", () -> {
    int[] out = new int[8];
    Thread[] ts = new Thread[8];
    for (int i = 0; i < 8; i++) { int k = i; ts[i] = new Thread(() -> out[k] = k + 1); ts[i].start(); }
    for (Thread t : ts) t.join();
    return IntStream.of(out).sum() == 36;
});
check("executor", () -> {
    ExecutorService ex = Executors.newFixedThreadPool(3);
    try { return ex.submit(() -> 42).get() == 42 && CompletableFuture.supplyAsync(() -> 1).get() == 1; }
    finally { ex.shutdown(); }
});
check("streams", () -> IntStream.range(0, 200_000).parallel().map(x -> x % 7).sum() == 599_994
    && Stream.of("b", "a").sorted().collect(Collectors.joining()).equals("ab"));
check("gc", () -> {
    List<int[]> junk = new ArrayList<>();
    for (int i = 0; i < 2000; i++) junk.add(new int[10_000]);
    junk = null;
    System.gc();
    return Runtime.getRuntime().freeMemory() > 0;
});
boolean files(String base) throws Exception {
    Path d = Paths.get(base, "jd");
    Files.createDirectories(d.resolve("e"));
    Path p = d.resolve("j.txt");
    Files.writeString(p, "abc");
    Files.move(p, d.resolve("k.txt"));
    Files.copy(d.resolve("k.txt"), p);
    boolean ok = Files.readString(p).equals("abc") && Files.size(p) == 3;
    try (FileChannel fc = FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
        MappedByteBuffer mb = fc.map(FileChannel.MapMode.READ_WRITE, 0, 3);
        mb.put(0, (byte) 'z');
        try (FileLock l = fc.lock()) { ok &= l.isValid(); }
    }
    Path t = Files.createTempFile(d, "x", ".y");
    Files.setLastModifiedTime(t, java.nio.file.attribute.FileTime.fromMillis(1000));
    try (Stream<Path> s = Files.list(d)) { ok &= s.count() == 4; }
    try (Stream<Path> w = Files.walk(d)) { w.sorted(Comparator.reverseOrder()).forEach(x -> x.toFile().delete()); }
    return ok && !Files.exists(d);
}
check("files_work", () -> files("/work"));
check("files_tmp", () -> files(System.getProperty("java.io.tmpdir")));
check("watch", () -> {
    try (WatchService ws = FileSystems.getDefault().newWatchService()) {
        Paths.get("/work").register(ws, StandardWatchEventKinds.ENTRY_CREATE);
        Files.writeString(Paths.get("/work/w.txt"), "w");
        WatchKey k = ws.poll(10, TimeUnit.SECONDS);
        Files.delete(Paths.get("/work/w.txt"));
        return k != null;
    }
});
check("process", () -> {
    Process p = new ProcessBuilder(System.getProperty("java.home") + "/bin/java",
        "-Xshare:auto", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx32m", "-version")
        .redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes());
    return p.waitFor() == 0 && out.contains("version");
});
check("tcp", () -> {
    try (ServerSocket ss = new ServerSocket(0, 5, InetAddress.getLoopbackAddress());
         Socket c = new Socket(InetAddress.getLoopbackAddress(), ss.getLocalPort());
         Socket s = ss.accept()) {
        c.setTcpNoDelay(true);
        c.getOutputStream().write(7);
        return s.getInputStream().read() == 7;
    }
});
check("tcp_v6", () -> {
    InetAddress v6 = InetAddress.getByName("::1");
    try (ServerSocket ss = new ServerSocket(0, 5, v6); Socket c = new Socket(v6, ss.getLocalPort()); Socket s = ss.accept()) {
        c.getOutputStream().write(6);
        return s.getInputStream().read() == 6;
    }
});
check("nio", () -> {
    try (ServerSocketChannel sc = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0));
         SocketChannel cc = SocketChannel.open(sc.getLocalAddress());
         SocketChannel ac = sc.accept();
         Selector sel = Selector.open()) {
        cc.write(ByteBuffer.wrap(new byte[] {1}));
        ac.configureBlocking(false);
        ac.register(sel, SelectionKey.OP_READ);
        return sel.select(10_000) == 1;
    }
});
check("udp", () -> {
    try (DatagramSocket d = new DatagramSocket(0, InetAddress.getLoopbackAddress())) {
        d.send(new DatagramPacket(new byte[] {1}, 1, d.getLocalSocketAddress()));
        DatagramPacket r = new DatagramPacket(new byte[4], 4);
        d.setSoTimeout(10_000);
        d.receive(r);
        return r.getLength() == 1;
    }
});
check("interfaces", () -> Collections.list(NetworkInterface.getNetworkInterfaces()).stream().anyMatch(n -> n.getName().equals("lo")));
check("time", () -> Instant.now().getEpochSecond() > 1_000_000_000L && LocalDateTime.now().getYear() > 2000
    && ZoneId.systemDefault() != null && System.nanoTime() != 0);
check("sleep", () -> { long t = System.nanoTime(); Thread.sleep(20); return System.nanoTime() - t >= 20_000_000L; });
check("random", () -> new SecureRandom().nextInt(10) < 10 && SecureRandom.getInstanceStrong().nextInt(10) < 10
    && MessageDigest.getInstance("SHA-256").digest(new byte[1]).length == 32);
check("system", () -> Runtime.getRuntime().availableProcessors() > 0 && ProcessHandle.current().pid() > 0
    && System.getProperty("user.dir").equals("/work"));
System.out.println("checks=done");
"#;

#[tokio::test]
async fn java_works_under_the_allow_list() {
    let fx = Fixture::new();
    let java = fx.runtime("openjdk-17").await;
    smoke_test(&fx, &java).await;
    // Unchecked (no access list): the snippet reaches threads, files, processes, sockets.
    let run = fx.eval(&java, one(JAVA), limits()).await;
    assert_checks(&run, &check_names(JAVA));
    fx.assert_clean().await;
}

const NODE: &str = r#"
const fs = require('fs'), net = require('net'), os = require('os'), cp = require('child_process');
const crypto = require('crypto'), dgram = require('dgram'), http = require('http'), zlib = require('zlib');
const { Worker } = require('worker_threads');
const checks = [];
function check(name, f) { checks.push((async () => {
  try { const v = await f(); console.log(v ? `${name}=ok` : `${name}=FAIL: returned ${v}`); }
  catch (e) { console.log(`${name}=FAIL: ${e && e.stack}`); }
})()); }
check('console', () => { console.log('hello', 1 + 1); return true; });
check('fs_work', async () => {
  fs.mkdirSync('/work/d/e', { recursive: true });
  fs.writeFileSync('/work/d/n.txt', 'abc');
  fs.renameSync('/work/d/n.txt', '/work/d/m.txt');
  fs.copyFileSync('/work/d/m.txt', '/work/d/c.txt');
  fs.symlinkSync('/work/d/m.txt', '/work/d/l');
  fs.chmodSync('/work/d/m.txt', 0o600);
  fs.utimesSync('/work/d/m.txt', 1, 1);
  const ok = fs.readFileSync('/work/d/m.txt', 'utf8') === 'abc' && fs.readdirSync('/work/d').length === 4
    && fs.statSync('/work/d/c.txt').size === 3 && fs.readlinkSync('/work/d/l') === '/work/d/m.txt';
  await fs.promises.writeFile('/tmp/p.txt', 'xyz');
  const back = await fs.promises.readFile('/tmp/p.txt', 'utf8');
  const fd = fs.openSync('/tmp/p.txt', 'r+'); fs.fsyncSync(fd); fs.ftruncateSync(fd, 1); fs.closeSync(fd);
  fs.rmSync('/work/d', { recursive: true }); fs.unlinkSync('/tmp/p.txt');
  return ok && back === 'xyz' && !fs.existsSync('/work/d');
});
check('watch', () => new Promise(resolve => {
  const w = fs.watch('/work', () => { w.close(); resolve(true); });
  fs.writeFileSync('/work/w.txt', 'w');
}));
check('tcp', () => new Promise((resolve, reject) => {
  const srv = net.createServer(s => s.on('data', d => s.end(d)));
  srv.listen(0, '127.0.0.1', () => {
    const c = net.connect(srv.address().port, '127.0.0.1', () => c.write('ping'));
    c.on('data', d => { c.destroy(); srv.close(); resolve(d.toString() === 'ping'); });
    c.on('error', reject);
  });
}));
check('tcp_v6', () => new Promise((resolve, reject) => {
  const srv = net.createServer(s => s.end('v6'));
  srv.listen(0, '::1', () => {
    const c = net.connect(srv.address().port, '::1');
    c.on('data', d => { c.destroy(); srv.close(); resolve(d.toString() === 'v6'); });
    c.on('error', reject);
  });
}));
check('udp', () => new Promise(resolve => {
  const u = dgram.createSocket('udp4');
  u.on('message', m => { u.close(); resolve(m.toString() === 'x'); });
  u.bind(0, '127.0.0.1', () => u.send('x', u.address().port, '127.0.0.1'));
}));
check('http', () => new Promise((resolve, reject) => {
  const h = http.createServer((q, r) => r.end('ok'));
  h.listen(0, '127.0.0.1', () => {
    http.get(`http://127.0.0.1:${h.address().port}/`, r => {
      let body = ''; r.on('data', d => body += d); r.on('end', () => { h.close(); resolve(body === 'ok'); });
    }).on('error', reject);
  });
}));
check('unix', () => new Promise((resolve, reject) => {
  const srv = net.createServer(s => s.end('u'));
  srv.listen('/work/s.sock', () => {
    const c = net.connect('/work/s.sock');
    c.on('data', d => { c.destroy(); srv.close(); resolve(d.toString() === 'u'); });
    c.on('error', reject);
  });
}));
check('worker', () => new Promise((resolve, reject) => {
  const w = new Worker('require("worker_threads").parentPort.postMessage(6 * 7)', { eval: true });
  w.on('message', m => resolve(m === 42)); w.on('error', reject);
}));
check('child_process', () => cp.execFileSync(process.execPath, ['-e', 'console.log(6 * 7)']).toString() === '42\n'
  && new Promise(resolve => cp.spawn(process.execPath, ['-e', 'process.exit(3)']).on('exit', c => resolve(c === 3))));
check('crypto', () => crypto.randomBytes(16).length === 16 && crypto.createHash('sha256').update('x').digest('hex').length === 64
  && crypto.randomUUID().length === 36);
check('zlib', () => zlib.gunzipSync(zlib.gzipSync('aaaa')).toString() === 'aaaa');
check('timers', () => new Promise(resolve => { const t = Date.now(); setTimeout(() => resolve(Date.now() - t >= 10), 20); }));
check('immediate', () => new Promise(resolve => setImmediate(() => resolve(true))));
check('signals', () => new Promise(resolve => { process.once('SIGUSR1', () => resolve(true)); process.kill(process.pid, 'SIGUSR1'); }));
check('system', () => os.cpus().length > 0 && os.totalmem() > 0 && os.hostname() === 'sandbox' && Object.keys(os.networkInterfaces()).includes('lo')
  && process.getuid() > 0 && process.hrtime.bigint() > 0n && new Date().getFullYear() > 2000 && process.cwd() === '/work');
check('memory', () => { const a = []; for (let i = 0; i < 300000; i++) a.push({ i }); const b = Buffer.alloc(32 << 20); return a.length === 300000 && b.length > 0; });
Promise.all(checks).then(() => console.log('checks=done'));
"#;

#[tokio::test]
async fn node_works_under_the_allow_list() {
    let host_node = || std::path::Path::new("/usr/bin/node").exists();
    if !available("node-20", host_node, "no /usr/bin/node on this host") {
        return;
    }
    let fx = Fixture::new();
    let node = fx.runtime("node-20").await;
    smoke_test(&fx, &node).await;
    let run = fx.eval(&node, one(NODE), limits()).await;
    assert_checks(&run, &check_names(NODE));
    fx.assert_clean().await;
}

const SHELL: &str = r#"
check() { if eval "$2" > /work/out 2>&1; then echo "$1=ok"; else echo "$1=FAIL: $(cat /work/out)"; fi; }
check pipeline 'test "$(yes | head -3 | cat | cat)" = "$(printf "y\ny\ny")"'
check subshell 'test "$( (echo sub; exit 0) )" = sub'
check background 'sleep 0.05 & p=$!; wait $p'
check files 'cd /work && echo data > f && test "$(cat f)" = data && ls -la /work | cat > /dev/null && dd if=/dev/zero of=z bs=1k count=64 2>/dev/null && test "$(ls z)" = z && cat /proc/self/status | head -1 > /dev/null'
check tmp 'echo t > /tmp/t && test "$(cat /tmp/t)" = t'
check id 'test "$(id -u)" != 0'
check env 'env | head -1 > /dev/null'
check trap 'trap "echo t > /work/trapped" USR1; kill -USR1 $$; test -f /work/trapped'
check heredoc 'read a <<EOF
hi
EOF
test "$a" = hi'
check arithmetic 'test $((6 * 7)) = 42'
check times 'times > /dev/null && umask > /dev/null && pwd > /dev/null'
echo checks=done
"#;

#[tokio::test]
async fn the_shell_works_under_the_allow_list() {
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    smoke_test(&fx, &shell).await;
    let run = fx.eval(&shell, one(SHELL), limits()).await;
    let names: Vec<&str> = SHELL
        .lines()
        .filter_map(|l| l.strip_prefix("check ")?.split(' ').next())
        .collect();
    assert_checks(&run, &names);
    fx.assert_clean().await;
}

/// From inside a Python sandbox: what the allow list leaves out fails with the
/// filter's errno (EPERM; ENOSYS for clone3), and what it keeps works. x86_64
/// syscall numbers.
#[cfg(target_arch = "x86_64")]
const PROBE: &str = r#"
import ctypes, errno, fcntl, os, socket, struct, termios
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def raw(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return rc, ctypes.get_errno()

def denied(name, nr, *args, want=errno.EPERM):
    rc, e = raw(nr, *args)
    if rc >= 0 and name.startswith("socket"):
        os.close(rc)
    ok = rc == -1 and e == want
    print(f"{name}=ok" if ok else f"{name}=FAIL: rc={rc} errno={errno.errorcode.get(e, e)}", flush=True)

def allowed(name, nr, *args):
    rc, e = raw(nr, *args)
    if rc >= 0 and name.startswith("socket"):
        os.close(rc)
    print(f"{name}=ok" if rc >= 0 else f"{name}=FAIL: errno={errno.errorcode.get(e, e)}", flush=True)

SOCKET, SOCKETPAIR = 41, 53
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET = 1, 2, 3, 5
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
pair = (ctypes.c_int * 2)()
buf = ctypes.create_string_buffer(4096)

# Families outside the list, whatever the type or protocol.
denied("socket_alg", SOCKET, 38, SOCK_SEQPACKET, 0)
denied("socket_alg_high_bits", SOCKET, (1 << 32) | 38, SOCK_SEQPACKET, 0)
denied("socket_packet", SOCKET, 17, SOCK_DGRAM, 0)
denied("socket_vsock", SOCKET, 40, SOCK_STREAM, 0)
denied("socket_key", SOCKET, 15, SOCK_RAW, 2)
denied("socket_bluetooth", SOCKET, 31, SOCK_RAW, 1)
denied("socket_tipc", SOCKET, 30, 4, 0)
denied("socket_netlink_uevent", SOCKET, AF_NETLINK, SOCK_RAW, 15)
denied("socket_netlink_audit", SOCKET, AF_NETLINK, SOCK_RAW, 9)
denied("socket_netlink_generic", SOCKET, AF_NETLINK, SOCK_RAW, 16)
denied("socket_netlink_sock_diag", SOCKET, AF_NETLINK, SOCK_RAW, 4)
denied("socket_netlink_route_high_bits", SOCKET, AF_NETLINK, SOCK_RAW, (1 << 32) | 15)
denied("socketpair_alg", SOCKETPAIR, 38, SOCK_SEQPACKET, 0, pair)
denied("socketpair_inet", SOCKETPAIR, AF_INET, SOCK_STREAM, 0, pair)
# The families snippets use.
allowed("socket_unix", SOCKET, AF_UNIX, SOCK_STREAM, 0)
allowed("socket_unix_dgram", SOCKET, AF_UNIX, SOCK_DGRAM | 0o2000000, 0)
allowed("socket_inet", SOCKET, AF_INET, SOCK_STREAM, 0)
allowed("socket_inet_dgram", SOCKET, AF_INET, SOCK_DGRAM, 0)
allowed("socket_inet6", SOCKET, AF_INET6, SOCK_STREAM, 0)
allowed("socket_netlink_route", SOCKET, AF_NETLINK, SOCK_RAW, 0)
allowed("socketpair_unix", SOCKETPAIR, AF_UNIX, SOCK_STREAM, 0, pair)
def route_dump():
    # RTM_GETLINK over NETLINK_ROUTE, as getifaddrs does.
    names = [n for _, n in socket.if_nameindex()]
    return "lo" in names
print("netlink_route_dump=ok" if route_dump() else "netlink_route_dump=FAIL", flush=True)

# Socket options that widen the kernel surface: a TCP upper-layer protocol (kTLS), a
# classic BPF filter. Ordinary options work.
tcp = socket.socket()
one_int = ctypes.byref(ctypes.c_int(1))
denied("setsockopt_tcp_ulp", 54, tcp.fileno(), 6, 31, b"tls", 4)
denied("setsockopt_attach_filter", 54, tcp.fileno(), 1, 26, buf, 16)
allowed("setsockopt_nodelay", 54, tcp.fileno(), 6, 1, one_int, 4)
allowed("setsockopt_reuseaddr", 54, tcp.fileno(), 1, 2, one_int, 4)
tcp.close()

# Syscalls outside the list.
denied("modify_ldt", 154, 0, buf, 16)
denied("fanotify_init", 300, 0, 0)
denied("io_uring_setup", 425, 8, ctypes.create_string_buffer(120))
denied("unshare_user", 272, 0x10000000)
denied("unshare_net", 272, 0x40000000)
denied("mount", 165, b"none", b"/tmp", b"tmpfs", 0, None)
denied("keyctl", 250, 0, -3, 0)
denied("add_key", 248, b"user", b"k", b"v", 1, -3)
denied("bpf", 321, 0, buf, 72)
denied("perf_event_open", 298, buf, 0, -1, -1, 0)
denied("ptrace", 101, 0, 0, 0, 0)
denied("userfaultfd", 323, 0)
denied("open_by_handle_at", 304, -100, buf, 0)
denied("init_module", 175, buf, 16, b"")
denied("kexec_load", 246, 0, 0, None, 0)
denied("setns", 308, 0, 0)
denied("pivot_root", 155, b"/work", b"/work")
denied("chroot", 161, b"/work")
denied("process_vm_readv", 310, 1, buf, 1, buf, 1, 0)
# Namespaces through clone's flags; clone3's flags are out of the filter's reach.
denied("clone_newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)
denied("clone_newnet", 56, 0x40000000 | 17, 0, 0, 0, 0)
denied("clone3", 435, buf, 88, want=errno.ENOSYS)
# The x32 ABI (getpid with bit 30).
denied("x32_getpid", 0x40000000 | 39)

# ioctl: the terminal requests runtimes make pass; TIOCSTI (faking terminal input)
# and anything unlisted do not.
denied("ioctl_tiocsti", 16, 1, termios.TIOCSTI, b"x")
denied("ioctl_tiocsti_high_bits", 16, 1, (1 << 32) | termios.TIOCSTI, b"x")
denied("ioctl_tiocsetd", 16, 1, 0x5423, buf)
denied("ioctl_tioclinux", 16, 1, 0x541C, buf)
r, w = os.pipe()
os.write(w, b"abc")
n = ctypes.c_int()
allowed("ioctl_fionread", 16, r, termios.FIONREAD, ctypes.byref(n))
print("fionread_value=ok" if n.value == 3 else f"fionread_value=FAIL: {n.value}", flush=True)
allowed("ioctl_fionbio", 16, r, termios.FIONBIO, ctypes.byref(ctypes.c_int(1)))
allowed("ioctl_fioclex", 16, r, termios.FIOCLEX)
rc, e = raw(16, r, termios.TCGETS, buf)
print("ioctl_tcgets=ok" if rc == -1 and e == errno.ENOTTY else f"ioctl_tcgets=FAIL: rc={rc} errno={e}", flush=True)
print("checks=done")
"#;

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn what_the_list_leaves_out_fails_from_inside() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let run = fx.eval(&python, one(PROBE), limits()).await;
    let names: Vec<String> = PROBE
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("denied(\"")
                .or_else(|| l.strip_prefix("allowed(\""))?;
            rest.split('"').next().map(String::from)
        })
        .collect();
    assert!(names.len() > 40, "{names:?}");
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_checks(&run, &names);
}

/// A JShell evaluation held to the shipped java-default list (the driver checks each
/// class through the supervisor) and a Python one held to python-default still work.
#[tokio::test]
async fn checked_evaluations_work_under_the_allow_list() {
    let fx = Fixture::new();
    let java = fx.runtime("openjdk-17").await;
    let mut launch: Launch = java.launch();
    launch.access_list = Some(Arc::new(Catalog::new(None).load("java-default").unwrap()));
    let run = fx
        .eval_launch(
            &launch,
            one("System.out.println(List.of(3, 1, 2).stream().sorted().map(i -> i * 10).collect(Collectors.toList()));"),
            limits(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(run.stdout(), "[10, 20, 30]\n", "{run:#?}");
    let python = fx.runtime("python-3.11").await;
    let mut launch = python.launch();
    launch.access_list = Some(Arc::new(Catalog::new(None).load("python-default").unwrap()));
    let run = fx
        .eval_launch(
            &launch,
            one("import math, json, datetime\nprint(json.dumps([math.isqrt(49), datetime.date(2024, 1, 2).isoformat()]))"),
            limits(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(run.stdout(), "[7, \"2024-01-02\"]\n", "{run:#?}");
}
