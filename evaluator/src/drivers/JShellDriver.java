/*
 * The JShell driver: runs a snippet's Java components inside the sandboxed JVM.
 *
 * Compiled with the runtime's own javac when an openjdk runtime is installed (see the
 * jshell driver step of runtime installation), which also records a class-data-sharing
 * archive of what a typical snippet loads (JShell and javac), and run as
 *   java [heap and thread options] -XX:SharedArchiveFile=DRIVER_DIR/jshell.jsa
 *        -cp DRIVER_DIR JShellDriver
 * Input on fd 3 (a sealed memfd), big-endian:
 *   "JSHD" int version(1) int maxStatements int maxValueChars boolean checkClasses
 *   boolean warm, then bytes stdin, int count, then count x (bytes id, bytes code).
 * Everything up to `warm` is read first and JShell is started (and with `warm` a
 * statement compiled and run) before the rest is read: a sandbox started ahead of its
 * request gets the rest, through a pipe, only when the request comes.
 * where bytes = int length + that many bytes (UTF-8 for text).
 * Events on fd 4, one JSON object per line, the same vocabulary as the Python driver:
 *   start, output (base64), value, syntax_error (javac code, message, span in code
 *   points of the component), exception, internal, end, plus
 *   classes {seq, id, classes: [{name, bytes (base64)}]}: the class files a statement
 *     produced, before any is loaded; the supervisor answers "SEQ allow" or "SEQ deny"
 *     on stdin (fd 0), which is why the snippet's own stdin comes from the input;
 *   memory_limit: the heap ran out (the evaluation ends with a memory-limit status).
 * Nothing here is trusted by the supervisor: it checks the class bytes itself.
 */

import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

import jdk.jshell.Diag;
import jdk.jshell.EvalException;
import jdk.jshell.JShell;
import jdk.jshell.JShellException;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.UnresolvedReferenceException;
import jdk.jshell.execution.LocalExecutionControl;
import jdk.jshell.spi.ExecutionControl;
import jdk.jshell.spi.ExecutionControlProvider;
import jdk.jshell.spi.ExecutionEnv;

public final class JShellDriver {
    private static final int VERSION = 1;
    /** jsheets' default imports. */
    private static final String[] DEFAULT_IMPORTS = {
        "java.math", "java.time", "java.text", "java.util", "java.util.function", "java.util.stream",
    };
    private static final String DENIED_CLASS = "jsheets.AccessDenied";
    private static final int FLUSH_BYTES = 8192;
    private static final long FLUSH_MILLIS = 20;

    private static Events events;
    private static BufferedReader verdicts;
    private static boolean checkClasses;
    /** Set while the driver compiles its own warm-up statement. */
    private static boolean warming;
    private static String component = "";
    private static long seq;
    /** Set when the supervisor refused the classes of the statement being evaluated. */
    private static boolean refused;
    private static final Set<String> refusedClasses = new HashSet<>();

    /** Where each snippet came from, to map stack frames back to component lines. */
    private record Origin(String component, int firstLine) {}

    private static final Map<String, Origin> origins = new HashMap<>();

    public static void main(String[] args) {
        PrintStream rawErr = System.err;
        // `JShellDriver INPUT EVENTS` (files) is the training run that records which
        // classes go into the runtime's class-data-sharing archive at install time.
        String input = args.length == 2 ? args[0] : "/proc/self/fd/3";
        String output = args.length == 2 ? args[1] : "/proc/self/fd/4";
        try {
            events = new Events(new FileOutputStream(output));
        } catch (IOException e) {
            rawErr.println("jsheets driver: cannot open the event channel: " + e);
            System.exit(70);
        }
        try {
            run(input);
            events.flushOutput();
            events.write("{\"event\":\"done\"}");
            events.close();
            System.exit(0);
        } catch (OutOfMemoryError e) {
            memoryLimit();
        } catch (Throwable e) {
            try {
                events.flushOutput();
                events.write("{\"event\":\"internal\",\"message\":" + json("driver failed: " + e) + "}");
                events.close();
            } catch (Throwable ignored) {
                // Nothing left to report on.
            }
            System.exit(70);
        }
    }

    private static void memoryLimit() {
        try {
            events.flushOutput();
            events.write("{\"event\":\"memory_limit\"}");
            events.close();
        } catch (Throwable ignored) {
            // The exit status still tells.
        }
        Runtime.getRuntime().halt(3);
    }

    private static void run(String input) throws IOException {
        DataInputStream in = new DataInputStream(new FileInputStream(input));
        byte[] magic = new byte[4];
        in.readFully(magic);
        if (!new String(magic, StandardCharsets.US_ASCII).equals("JSHD") || in.readInt() != VERSION) {
            throw new IOException("input is not a version " + VERSION + " driver document");
        }
        int maxStatements = in.readInt();
        int maxValueChars = in.readInt();
        checkClasses = in.readBoolean();
        boolean warm = in.readBoolean();

        // Replies arrive on the real stdin; the snippet reads its stdin from the input.
        verdicts = new BufferedReader(new InputStreamReader(new FileInputStream(FileDescriptor.in), StandardCharsets.US_ASCII));
        PrintStream out = new PrintStream(events.stream("stdout"), true, StandardCharsets.UTF_8);
        PrintStream err = new PrintStream(events.stream("stderr"), true, StandardCharsets.UTF_8);
        System.setOut(out);
        System.setErr(err);
        SnippetInput snippetIn = new SnippetInput();
        System.setIn(snippetIn);

        try (JShell shell = JShell.builder()
                .executionEngine(new Provider(), Map.of())
                // Pattern matching for switch is a preview feature of Java 17.
                .compilerOptions("--enable-preview", "--source", Integer.toString(Runtime.version().feature()))
                .in(System.in)
                .out(out)
                .err(err)
                .build()) {
            for (String pkg : DEFAULT_IMPORTS) {
                for (SnippetEvent e : shell.eval("import " + pkg + ".*;")) {
                    if (e.status() != Snippet.Status.VALID) {
                        throw new IOException("default import " + pkg + " failed");
                    }
                }
            }
            SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
            if (warm) {
                // Started ahead of its request: compile and run a statement now so that
                // javac and the execution engine are warm, and leave nothing behind.
                warming = true;
                for (SnippetEvent e : shell.eval("String.valueOf(1 + 1).length();")) {
                    shell.drop(e.snippet());
                }
                analysis.analyzeCompletion("int x = 1;");
                warming = false;
                events.flushOutput();
                events.write("{\"event\":\"ready\"}");
            }
            // The request: stdin and components (for a warm sandbox, the wait is here).
            snippetIn.set(bytes(in));
            int count = in.readInt();
            List<String[]> components = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                components.add(new String[] {text(in), text(in)});
            }
            in.close();
            for (String[] c : components) {
                runComponent(shell, analysis, c[0], c[1], maxStatements, maxValueChars);
            }
        }
    }

    private static void runComponent(JShell shell, SourceCodeAnalysis analysis, String id, String code,
            int maxStatements, int maxValueChars) throws IOException {
        component = id;
        events.flushOutput();
        events.write("{\"event\":\"start\",\"id\":" + json(id) + "}");
        boolean ok = true;
        String rest = code;
        int pos = 0;
        int statements = 0;
        while (true) {
            SourceCodeAnalysis.CompletionInfo info = analysis.analyzeCompletion(rest);
            SourceCodeAnalysis.Completeness completeness = info.completeness();
            if (completeness == SourceCodeAnalysis.Completeness.EMPTY || rest.isBlank()) {
                break;
            }
            String source;
            int consumed;
            if (completeness.isComplete() || completeness == SourceCodeAnalysis.Completeness.UNKNOWN) {
                source = info.source();
                consumed = rest.length() - info.remaining().length();
            } else {
                // Incomplete: hand JShell the rest, which reports what is missing.
                source = rest;
                consumed = rest.length();
            }
            if (source == null || consumed <= 0) {
                source = rest;
                consumed = rest.length();
            }
            String segment = rest.substring(0, consumed);
            String core = completeness == SourceCodeAnalysis.Completeness.COMPLETE_WITH_SEMI && source.endsWith(";")
                    ? source.substring(0, source.length() - 1) : source;
            // JShell's positions are relative to `source`, leading blanks included.
            int lead = segment.indexOf(core);
            if (lead < 0) {
                lead = segment.length() - segment.stripLeading().length();
            }
            int base = pos + lead;
            statements++;
            if (statements > maxStatements) {
                int first = base + source.length() - source.stripLeading().length();
                syntaxError(id, code, "compiler.err.jsheets.statement.limit",
                        "more than " + maxStatements + " statements in one component", first, code.length());
                ok = false;
                break;
            }
            ok &= statement(shell, id, code, source, base, maxValueChars);
            pos += consumed;
            rest = rest.substring(consumed);
        }
        events.flushOutput();
        events.write("{\"event\":\"end\",\"id\":" + json(id) + ",\"ok\":" + ok + "}");
    }

    /** Evaluates one statement that starts at `base` (UTF-16 index) in `code`. */
    private static boolean statement(JShell shell, String id, String code, String source, int base, int maxValueChars)
            throws IOException {
        refused = false;
        List<SnippetEvent> results = shell.eval(source);
        boolean ok = true;
        if (refused) {
            // The supervisor has reported each denied reference; what JShell made of
            // this statement goes, so later statements cannot use it.
            for (SnippetEvent e : results) {
                if (e.causeSnippet() == null && e.status().isActive()) {
                    shell.drop(e.snippet());
                }
            }
            return false;
        }
        int firstLine = lineOf(code, base);
        for (SnippetEvent e : results) {
            if (e.causeSnippet() != null) {
                continue;
            }
            Snippet s = e.snippet();
            origins.put(s.id(), new Origin(id, firstLine));
            if (e.status() == Snippet.Status.REJECTED) {
                ok = false;
                List<Diag> diags = shell.diagnostics(s).filter(Diag::isError).collect(Collectors.toList());
                if (diags.isEmpty()) {
                    syntaxError(id, code, "compiler.err.jsheets.rejected", "the statement was rejected", base,
                            base + source.length());
                }
                for (Diag d : diags) {
                    long start = d.getStartPosition();
                    long end = d.getEndPosition();
                    if (start < 0) {
                        start = 0;
                        end = source.length();
                    }
                    int from = base + (int) Math.min(start, source.length());
                    int to = base + (int) Math.max(Math.min(end, source.length()), Math.min(start, source.length()));
                    syntaxError(id, code, d.getCode(), d.getMessage(null), Math.min(from, code.length()),
                            Math.min(to, code.length()));
                }
                continue;
            }
            JShellException exception = e.exception();
            if (exception != null) {
                ok = false;
                exception(id, exception);
                continue;
            }
            String value = e.value();
            if (value != null && reportsValue(s)) {
                if (value.length() > maxValueChars) {
                    value = value.substring(0, maxValueChars) + "...";
                }
                events.flushOutput();
                events.write("{\"event\":\"value\",\"id\":" + json(id) + ",\"repr\":" + json(value) + "}");
            }
        }
        return ok;
    }

    private static boolean reportsValue(Snippet s) {
        switch (s.subKind()) {
            case TEMP_VAR_EXPRESSION_SUBKIND:
            case VAR_VALUE_SUBKIND:
            case ASSIGNMENT_SUBKIND:
            case OTHER_EXPRESSION_SUBKIND:
                return true;
            default:
                return false;
        }
    }

    private static void exception(String id, JShellException exception) throws IOException {
        String kind;
        if (exception instanceof EvalException ee) {
            kind = ee.getExceptionClassName();
        } else if (exception instanceof UnresolvedReferenceException) {
            kind = "jdk.jshell.UnresolvedReferenceException";
        } else {
            kind = exception.getClass().getName();
        }
        if (kind.equals(DENIED_CLASS)) {
            return;
        }
        String message = exception.getMessage() == null ? "" : exception.getMessage();
        if (kind.equals("java.lang.OutOfMemoryError") && !message.contains("native thread")) {
            memoryLimit();
        }
        StringBuilder trace = new StringBuilder();
        Integer line = null;
        Throwable t = exception;
        boolean first = true;
        while (t != null && trace.length() < 64 * 1024) {
            if (!first) {
                String k = t instanceof EvalException ee ? ee.getExceptionClassName() : t.getClass().getName();
                trace.append("Caused by: ").append(k);
                if (t.getMessage() != null) {
                    trace.append(": ").append(t.getMessage());
                }
                trace.append('\n');
            }
            StackTraceElement[] frames = t.getStackTrace();
            int last = -1;
            for (int i = 0; i < frames.length; i++) {
                if (origin(frames[i]) != null) {
                    last = i;
                }
            }
            int keep = last < 0 ? frames.length : last + 1;
            for (int i = 0; i < keep; i++) {
                StackTraceElement f = frames[i];
                Origin o = origin(f);
                if (o != null) {
                    int l = o.firstLine() + Math.max(f.getLineNumber(), 1) - 1;
                    if (first && line == null) {
                        line = l;
                    }
                    trace.append("  at ").append(frameName(f)).append(" (component ").append(o.component())
                            .append(", line ").append(l).append(")\n");
                } else {
                    trace.append("  at ").append(f).append('\n');
                }
            }
            first = false;
            t = t.getCause();
        }
        events.flushOutput();
        events.write("{\"event\":\"exception\",\"id\":" + json(id) + ",\"type\":" + json(kind) + ",\"message\":"
                + json(message) + ",\"traceback\":" + json(trace.toString()) + ",\"line\":"
                + (line == null ? "null" : line.toString()) + "}");
    }

    private static Origin origin(StackTraceElement f) {
        String file = f.getFileName();
        return file != null && file.startsWith("#") ? origins.get(file.substring(1)) : null;
    }

    /** JShell names a statement's own frame with empty class and method names. */
    private static String frameName(StackTraceElement f) {
        String cls = f.getClassName();
        String method = f.getMethodName();
        if (cls.isEmpty() && method.isEmpty()) {
            return "<statement>";
        }
        return cls.isEmpty() ? method : cls + "." + method;
    }

    private static void syntaxError(String id, String code, String kind, String message, int start, int end)
            throws IOException {
        int from = Math.max(0, Math.min(start, code.length()));
        int to = Math.max(from, Math.min(end, code.length()));
        int line = lineOf(code, from);
        int lineStart = code.lastIndexOf('\n', from - 1) + 1;
        int column = code.codePointCount(lineStart, from) + 1;
        events.flushOutput();
        events.write("{\"event\":\"syntax_error\",\"id\":" + json(id) + ",\"type\":" + json(kind) + ",\"message\":"
                + json(message) + ",\"line\":" + line + ",\"column\":" + column + ",\"start\":"
                + code.codePointCount(0, from) + ",\"end\":" + code.codePointCount(0, to) + "}");
    }

    private static int lineOf(String code, int index) {
        int line = 1;
        for (int i = 0; i < Math.min(index, code.length()); i++) {
            if (code.charAt(i) == '\n') {
                line++;
            }
        }
        return line;
    }

    /** Asks the supervisor whether these classes may be loaded. */
    private static boolean allowed(ExecutionControl.ClassBytecodes[] classes) {
        if (!checkClasses || warming) {
            return true;
        }
        long n = ++seq;
        StringBuilder msg = new StringBuilder("{\"event\":\"classes\",\"seq\":").append(n).append(",\"id\":")
                .append(json(component)).append(",\"classes\":[");
        Base64.Encoder b64 = Base64.getEncoder();
        for (int i = 0; i < classes.length; i++) {
            if (i > 0) {
                msg.append(',');
            }
            msg.append("{\"name\":").append(json(classes[i].name())).append(",\"bytes\":\"")
                    .append(b64.encodeToString(classes[i].bytecodes())).append("\"}");
        }
        msg.append("]}");
        try {
            events.flushOutput();
            events.write(msg.toString());
            String reply = verdicts.readLine();
            if (reply == null) {
                // The supervisor went away: nothing more may run.
                Runtime.getRuntime().halt(70);
            }
            return reply.equals(n + " allow");
        } catch (IOException e) {
            Runtime.getRuntime().halt(70);
            return false;
        }
    }

    private static final class Provider implements ExecutionControlProvider {
        @Override
        public String name() {
            return "jsheets";
        }

        @Override
        public ExecutionControl generate(ExecutionEnv env, Map<String, String> parameters) {
            return new Checked();
        }
    }

    /** Local execution (the snippet runs in this sandboxed JVM) with every class vetted first. */
    private static final class Checked extends LocalExecutionControl {
        @Override
        public void load(ClassBytecodes[] classes)
                throws ClassInstallException, NotImplementedException, EngineTerminationException {
            if (!allowed(classes)) {
                refused = true;
                for (ClassBytecodes c : classes) {
                    refusedClasses.add(c.name());
                }
                return;
            }
            super.load(classes);
        }

        /** Never redefine in place: JShell then compiles fresh classes, which go through load. */
        @Override
        public void redefine(ClassBytecodes[] classes) throws NotImplementedException {
            throw new NotImplementedException("redefine");
        }

        @Override
        public String invoke(String className, String methodName)
                throws RunException, EngineTerminationException, InternalException {
            if (refusedClasses.contains(className)) {
                throw new UserException("not loaded: denied by the access list", DENIED_CLASS, new StackTraceElement[0]);
            }
            return super.invoke(className, methodName);
        }
    }

    /** The snippet's stdin, known only once the request arrives. */
    private static final class SnippetInput extends java.io.InputStream {
        private ByteArrayInputStream data = new ByteArrayInputStream(new byte[0]);

        void set(byte[] bytes) {
            data = new ByteArrayInputStream(bytes);
        }

        @Override
        public int read() {
            return data.read();
        }

        @Override
        public int read(byte[] b, int off, int len) {
            return data.read(b, off, len);
        }

        @Override
        public int available() {
            return data.available();
        }
    }

    private static byte[] bytes(DataInputStream in) throws IOException {
        int n = in.readInt();
        if (n < 0 || n > (64 << 20)) {
            throw new IOException("bad length " + n);
        }
        byte[] b = new byte[n];
        in.readFully(b);
        return b;
    }

    private static String text(DataInputStream in) throws IOException {
        return new String(bytes(in), StandardCharsets.UTF_8);
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20 || Character.isSurrogate(c) && !validSurrogate(s, i)) {
                        b.append(String.format("\\u%04x", c < 0x20 ? (int) c : 0xfffd));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }

    private static boolean validSurrogate(String s, int i) {
        char c = s.charAt(i);
        if (Character.isHighSurrogate(c)) {
            return i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1));
        }
        return i > 0 && Character.isHighSurrogate(s.charAt(i - 1));
    }

    /** The event channel, with snippet output buffered briefly and sent as events. */
    private static final class Events {
        private final OutputStream channel;
        private final Map<String, java.io.ByteArrayOutputStream> pending = new HashMap<>();
        private final Thread flusher;

        Events(OutputStream channel) {
            this.channel = channel;
            pending.put("stdout", new java.io.ByteArrayOutputStream());
            pending.put("stderr", new java.io.ByteArrayOutputStream());
            flusher = new Thread(() -> {
                while (true) {
                    try {
                        Thread.sleep(FLUSH_MILLIS);
                        flushOutput();
                    } catch (InterruptedException e) {
                        return;
                    } catch (IOException e) {
                        Runtime.getRuntime().halt(70);
                    }
                }
            }, "jsheets-output");
            flusher.setDaemon(true);
            flusher.start();
        }

        OutputStream stream(String name) {
            return new OutputStream() {
                @Override
                public void write(int b) throws IOException {
                    write(new byte[] {(byte) b}, 0, 1);
                }

                @Override
                public void write(byte[] b, int off, int len) throws IOException {
                    boolean full;
                    synchronized (Events.this) {
                        java.io.ByteArrayOutputStream buf = pending.get(name);
                        buf.write(b, off, len);
                        full = buf.size() >= FLUSH_BYTES;
                    }
                    if (full) {
                        flushOutput();
                    }
                }
            };
        }

        synchronized void flushOutput() throws IOException {
            for (String name : new String[] {"stdout", "stderr"}) {
                java.io.ByteArrayOutputStream buf = pending.get(name);
                if (buf.size() > 0) {
                    String data = Base64.getEncoder().encodeToString(buf.toByteArray());
                    buf.reset();
                    write("{\"event\":\"output\",\"stream\":\"" + name + "\",\"data\":\"" + data + "\"}");
                }
            }
        }

        synchronized void write(String line) throws IOException {
            channel.write((line + "\n").getBytes(StandardCharsets.UTF_8));
        }

        synchronized void close() throws IOException {
            flusher.interrupt();
            channel.close();
        }
    }
}
