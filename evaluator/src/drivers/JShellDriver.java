/*
 * The JShell driver: runs a snippet's Java components inside the sandboxed JVM.
 *
 * Compiled with the runtime's own javac when an openjdk runtime is installed (see the
 * jshell driver step of runtime installation), which also builds the agent jar (a
 * manifest naming this class as Premain-Class, with Can-Redefine-Classes) and records a
 * class-data-sharing archive of what a typical snippet loads (JShell and javac), and run as
 *   java [heap and thread options] -XX:SharedArchiveFile=DRIVER_DIR/jshell.jsa
 *        -javaagent:DRIVER_DIR/jshell-agent.jar -cp DRIVER_DIR JShellDriver
 * Its input (fd 3), events (fd 4) and the supervisor's answers to class batches (fd 0)
 * are specified in PROTOCOL.md beside this file, and only there. The input is read up to
 * its `warm` flag first and JShell started (and with `warm` a statement compiled and
 * run) before the rest is read: a sandbox started ahead of its request gets the rest,
 * through a pipe, only when the request comes.
 * Nothing here is trusted by the supervisor: it checks the class bytes itself.
 *
 * Classes are redefined in place, as JShell's default (JDI) engine does with JVMTI
 * RedefineClasses: here through java.lang.instrument (the agent jar), so that a
 * redefined method, class or variable keeps the state stock JShell keeps. Where the JVM
 * refuses a redefinition (a changed schema), JShell is told so and replaces the classes
 * instead, as it does with JDI.
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
import java.lang.instrument.ClassDefinition;
import java.lang.instrument.Instrumentation;
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
    private static final int VERSION = 4;
    /** The input's mode byte: run the components, record what they would run, or replay a recording. */
    private static final int MODE_RUN = 0;
    private static final int MODE_RECORD = 1;
    private static final int MODE_REPLAY = 2;
    /** Compile host: record mode for one job after another, each read from stdin (see PROTOCOL.md). */
    private static final int MODE_SERVE = 3;
    /** A step of a recorded program (replay input): load a batch of classes, or invoke a snippet. */
    private static final int STEP_LOAD = 1;
    private static final int STEP_INVOKE = 2;
    /** The exception a recording's invoke throws so that JShell maps wrapper lines to snippet lines. */
    private static final String PROBE_CLASS = "jsheets.LineProbe";
    /** JShell's wrapper class names: the outer wrapper is group `class` (JShell's own pattern). */
    private static final java.util.regex.Pattern WRAPPER =
            java.util.regex.Pattern.compile("(REPL\\.)?(?<class>\\$JShell\\$\\w+)[\\$\\.]?");
    /** jsheets' default imports. */
    private static final String[] DEFAULT_IMPORTS = {
        "java.math", "java.time", "java.text", "java.util", "java.util.function", "java.util.stream",
    };
    private static final String DENIED_CLASS = "jsheets.AccessDenied";
    /** The method JShell generates to run an executable snippet (statement, expression, variable). */
    private static final String DO_IT = "do_it$";
    private static final int FLUSH_BYTES = 8192;
    /** Compile host: rounds of its warm-up, and the statements of each (printing nothing). */
    private static final int HOST_WARM_ROUNDS = 25;
    private static final String[] HOST_WARM_UP = {
        "int x = 20 + 22;",
        "String s = \"a\" + x; s.length()",
        "record P(int a, int b) {}",
        "var ps = List.of(new P(1, 2), new P(3, 4));",
        "ps.stream().map(p -> p.a() * 2).collect(Collectors.toList())",
        "class C { int f(int y) { return 10 / (y + 1); } }",
        "Map<String, Integer> m = new HashMap<>(); m.put(\"k\", new C().f(x));",
        "String.valueOf(1 + 1).length();",
    };
    private static final long FLUSH_MILLIS = 20;

    private static Events events;
    private static BufferedReader verdicts;
    private static boolean checkClasses;
    /** Set while the driver compiles its own warm-up statement. */
    private static boolean warming;
    /**
     * Record mode: nothing of the snippet runs; every class batch is sent (and answered)
     * and every invocation written as an `invoke` event instead of run.
     */
    private static boolean recording;
    /** The JShell of a recording, which its execution control asks which snippet it invokes. */
    private static JShell recordingShell;
    /** Outer wrapper classes whose lines a recording has mapped already. */
    private static final Set<String> probed = new HashSet<>();
    /** The frames of the probe thrown by the invocation of the statement being recorded. */
    private static StackTraceElement[] probe;
    private static String component = "";
    private static long seq;
    /** Compile host: set when the job's JShell asked to redefine a class. */
    private static boolean redefined;
    /** Set when the supervisor refused the classes of the statement being evaluated. */
    private static boolean refused;
    /**
     * Set when the first refusal of the statement was the redefinition of an executable
     * snippet's class: that snippet is dropped, never restored (see {@link #undo}), so JShell
     * is told the truth about every refused redefinition of the statement.
     */
    private static boolean refusedTruthfully;
    /** Classes whose latest code was refused: never run. */
    private static final Set<String> refusedClasses = new HashSet<>();
    /** Set by the agent jar (`-javaagent`) before `main`; null without it. */
    private static Instrumentation instrumentation;

    /** The probes thrown by the invocations of the statement being recorded, in order. */
    private static final List<StackTraceElement[]> probes = new ArrayList<>();

    /** Where each snippet came from, to map stack frames back to component lines. */
    private record Origin(String component, int firstLine) {}

    private static final Map<String, Origin> origins = new HashMap<>();

    /** The agent's entry point (the agent jar's Premain-Class), run before {@link #main}. */
    public static void premain(String args, Instrumentation inst) {
        instrumentation = inst;
    }

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
        int mode = in.readByte();
        if (mode == MODE_REPLAY) {
            Replay.run(in, maxValueChars, warm);
            return;
        }
        if (mode != MODE_RUN && mode != MODE_SERVE && (mode != MODE_RECORD || warm)) {
            throw new IOException("bad mode " + mode);
        }
        recording = mode == MODE_RECORD || mode == MODE_SERVE;

        // Replies arrive on the real stdin; the snippet reads its stdin from the input.
        verdicts = new BufferedReader(new InputStreamReader(new FileInputStream(FileDescriptor.in), StandardCharsets.US_ASCII));
        PrintStream out = new PrintStream(events.stream("stdout"), true, StandardCharsets.UTF_8);
        PrintStream err = new PrintStream(events.stream("stderr"), true, StandardCharsets.UTF_8);
        System.setOut(out);
        System.setErr(err);
        SnippetInput snippetIn = new SnippetInput();
        System.setIn(snippetIn);
        if (mode == MODE_SERVE) {
            in.close();
            serve(out, err, maxStatements, maxValueChars);
            return;
        }

        try (JShell shell = shell(out, err)) {
            SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
            recordingShell = recording ? shell : null;
            if (warm) {
                // Started ahead of its request: compile and run a statement now so that
                // javac and the execution engine are warm, and leave nothing behind.
                warmUp(shell, analysis);
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

    /** A JShell with this driver's execution engine and jsheets' default imports. */
    private static JShell shell(PrintStream out, PrintStream err) throws IOException {
        JShell shell = JShell.builder()
                .executionEngine(new Provider(), Map.of())
                // Pattern matching for switch is a preview feature of Java 17.
                .compilerOptions("--enable-preview", "--source", Integer.toString(Runtime.version().feature()))
                .in(System.in)
                .out(out)
                .err(err)
                .build();
        for (String pkg : DEFAULT_IMPORTS) {
            for (SnippetEvent e : shell.eval("import " + pkg + ".*;")) {
                if (e.status() != Snippet.Status.VALID) {
                    shell.close();
                    throw new IOException("default import " + pkg + " failed");
                }
            }
        }
        return shell;
    }

    /** Compiles (and, but in record mode, runs) a statement of the driver's own, leaving nothing behind. */
    private static void warmUp(JShell shell, SourceCodeAnalysis analysis) {
        warming = true;
        for (SnippetEvent e : shell.eval("String.valueOf(1 + 1).length();")) {
            shell.drop(e.snippet());
        }
        analysis.analyzeCompletion("int x = 1;");
        warming = false;
    }

    /**
     * Compile host: warm once, then one compile job after another, each a line
     * `job BASE64` on stdin (the request of a record-mode input: stdin, ignored, and
     * the components), compiled in record mode in a JShell of its own and ended with
     * `done`. Nothing of a job runs; nothing of one job is left for the next: a new
     * JShell, and every per-job field reset. End of stdin ends the host.
     */
    private static void serve(PrintStream out, PrintStream err, int maxStatements, int maxValueChars)
            throws IOException {
        // The warm-up statements are the driver's own, print nothing, and run (a
        // recording would have no snippet to record them as). A JShell per round, as
        // jobs have, so that javac is JIT-compiled before the first request comes.
        recording = false;
        warming = true;
        for (int round = 0; round < HOST_WARM_ROUNDS; round++) {
            try (JShell shell = shell(out, err)) {
                SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
                for (String statement : HOST_WARM_UP) {
                    analysis.analyzeCompletion(statement);
                    shell.eval(statement);
                }
            }
        }
        warming = false;
        recording = true;
        // The next job's JShell, with its default imports, is made before the job
        // comes: it holds nothing of any job.
        JShell next = shell(out, err);
        events.flushOutput();
        events.write("{\"event\":\"ready\"}");
        while (true) {
            String line = verdicts.readLine();
            if (line == null) {
                next.close();
                return;
            }
            if (!line.startsWith("job ")) {
                throw new IOException("compile host: expected a job, got " + line.length() + " bytes");
            }
            DataInputStream job = new DataInputStream(new ByteArrayInputStream(Base64.getDecoder().decode(line.substring(4))));
            bytes(job);
            int count = job.readInt();
            List<String[]> components = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                components.add(new String[] {text(job), text(job)});
            }
            try (JShell shell = next) {
                recordingShell = shell;
                SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
                for (String[] c : components) {
                    runComponent(shell, analysis, c[0], c[1], maxStatements, maxValueChars);
                }
            } finally {
                recordingShell = null;
                component = "";
                seq = 0;
                probe = null;
                refused = false;
                refusedTruthfully = false;
                probed.clear();
                probes.clear();
                refusedClasses.clear();
                origins.clear();
            }
            events.flushOutput();
            events.write(redefined ? "{\"event\":\"done\",\"redefined\":true}" : "{\"event\":\"done\"}");
            redefined = false;
            next = shell(out, err);
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
            int end = completeness == SourceCodeAnalysis.Completeness.UNKNOWN ? unknownStatementEnd(analysis, rest) : 0;
            if (end > 0) {
                source = rest.substring(0, end);
                consumed = end;
            } else if (completeness.isComplete() || completeness == SourceCodeAnalysis.Completeness.UNKNOWN) {
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
        refusedTruthfully = false;
        probes.clear();
        List<SnippetEvent> results = shell.eval(source);
        boolean ok = true;
        if (refused) {
            undo(shell, results);
            return false;
        }
        int firstLine = lineOf(code, base);
        List<EvalException> mapped = new ArrayList<>();
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
            if (recording && exception instanceof EvalException ee && ee.getExceptionClassName().equals(PROBE_CLASS)) {
                mapped.add(ee);
                continue;
            }
            if (exception != null) {
                ok = false;
                exception(id, exception);
                continue;
            }
            // Every snippet JShell ran has a value (as jsheets reports them): an
            // expression's or a variable's, "" for a statement or a void call.
            // A recording computes none (its `invoke` events say which to report).
            String value = recording ? null : e.value();
            if (value != null) {
                if (value.length() > maxValueChars) {
                    value = value.substring(0, maxValueChars) + "...";
                }
                events.flushOutput();
                events.write("{\"event\":\"value\",\"id\":" + json(id) + ",\"repr\":" + json(value) + "}");
            }
        }
        if (mapped.size() != probes.size()) {
            throw new IllegalStateException("recording: " + probes.size() + " probes, " + mapped.size() + " mapped");
        }
        for (int i = 0; i < mapped.size(); i++) {
            lines(id, probes.get(i), mapped.get(i).getStackTrace());
        }
        return ok;
    }

    /**
     * Takes back a statement the supervisor refused classes of (it has reported each
     * denied reference): what JShell made of it goes, so later statements cannot use it,
     * and a method or class it redefined is declared again from its earlier source.
     * Nothing refused was installed (see {@link Checked#redefine}), so the JVM still runs
     * the earlier code; declaring it again (its classes vetted like any others) brings
     * JShell's records back in line with the JVM by redefining in place, so the classes
     * keep their identity and static state. Variables and statements are not declared
     * again: that would run their code a second time.
     */
    private static void undo(JShell shell, List<SnippetEvent> results) {
        for (SnippetEvent e : results) {
            Snippet made = e.snippet();
            if (e.causeSnippet() != null || !shell.status(made).isActive()) {
                continue;
            }
            Snippet earlier = replacedDeclaration(results, made);
            refused = false;
            refusedTruthfully = false;
            if (earlier != null) {
                Origin origin = origins.get(earlier.id());
                for (SnippetEvent r : shell.eval(earlier.source())) {
                    if (r.causeSnippet() != null || !r.status().isActive()) {
                        continue;
                    }
                    if (refused) {
                        shell.drop(r.snippet());
                    } else if (origin != null) {
                        origins.put(r.snippet().id(), origin);
                    }
                }
            }
            if (shell.status(made).isActive()) {
                shell.drop(made);
            }
        }
    }

    /** The active method or class declaration `made` overwrote, if any. */
    private static Snippet replacedDeclaration(List<SnippetEvent> results, Snippet made) {
        for (SnippetEvent e : results) {
            Snippet.Kind kind = e.snippet().kind();
            if (e.causeSnippet() == made && e.status() == Snippet.Status.OVERWRITTEN
                    && e.previousStatus().isActive()
                    && (kind == Snippet.Kind.METHOD || kind == Snippet.Kind.TYPE_DECL)) {
                return e.snippet();
            }
        }
        return null;
    }

    /**
     * Where the first statement of `rest` ends when JShell's analysis cannot tell (a
     * syntax error in it) and takes everything to the end, which would hide the
     * diagnostics of the statements after it. Like the jshell tool, which reads its input
     * line by line: the end of the shortest run of whole lines that is itself such a
     * statement (UNKNOWN on its own), closes every bracket it opens and is followed by
     * something that can begin a statement (not `else`, `catch`, an operator, ...), within
     * the first 256 lines. 0 if there is none (JShell then gets the rest, as before).
     */
    private static int unknownStatementEnd(SourceCodeAnalysis analysis, String rest) {
        int from = 0;
        for (int lines = 0; lines < 256; lines++) {
            int newline = rest.indexOf('\n', from);
            if (newline < 0) {
                return 0;
            }
            from = newline + 1;
            String prefix = rest.substring(0, newline);
            if (prefix.isBlank() || !balanced(prefix) || !beginsStatement(rest, newline)) {
                continue;
            }
            if (analysis.analyzeCompletion(prefix).completeness() == SourceCodeAnalysis.Completeness.UNKNOWN) {
                return newline;
            }
        }
        return 0;
    }

    /** Whether `code` closes every bracket it opens, outside comments and literals. */
    private static boolean balanced(String code) {
        StringBuilder open = new StringBuilder();
        int i = 0;
        int n = code.length();
        while (i < n) {
            char c = code.charAt(i);
            if (code.startsWith("//", i)) {
                int end = code.indexOf('\n', i);
                i = end < 0 ? n : end;
            } else if (code.startsWith("/*", i)) {
                int end = code.indexOf("*/", i + 2);
                if (end < 0) {
                    return false;
                }
                i = end + 2;
            } else if (code.startsWith("\"\"\"", i)) {
                int end = i + 3;
                while (true) {
                    end = code.indexOf("\"\"\"", end);
                    if (end < 0) {
                        return false;
                    }
                    if (!escaped(code, end)) {
                        break;
                    }
                    end++;
                }
                i = end + 3;
            } else if (c == '"' || c == '\'') {
                int end = i + 1;
                while (end < n && code.charAt(end) != c && code.charAt(end) != '\n') {
                    end += code.charAt(end) == '\\' ? 2 : 1;
                }
                if (end >= n || code.charAt(end) != c) {
                    return false;
                }
                i = end + 1;
            } else {
                if (c == '(' || c == '[' || c == '{') {
                    open.append(c);
                } else if (c == ')' || c == ']' || c == '}') {
                    char expected = c == ')' ? '(' : c == ']' ? '[' : '{';
                    if (open.length() == 0 || open.charAt(open.length() - 1) != expected) {
                        return false;
                    }
                    open.setLength(open.length() - 1);
                }
                i++;
            }
        }
        return open.length() == 0;
    }

    /** Whether the character at `i` follows an odd number of backslashes. */
    private static boolean escaped(String code, int i) {
        int backslashes = 0;
        while (i - backslashes - 1 >= 0 && code.charAt(i - backslashes - 1) == '\\') {
            backslashes++;
        }
        return backslashes % 2 == 1;
    }

    /** Words that continue the statement before them. */
    private static final Set<String> CONTINUATIONS = Set.of("else", "catch", "finally", "while", "instanceof",
            "extends", "implements", "throws", "permits", "case", "default");

    /** Whether what follows `from` in `code` (blanks and comments skipped) can begin a statement. */
    private static boolean beginsStatement(String code, int from) {
        int i = from;
        int n = code.length();
        while (i < n) {
            if (Character.isWhitespace(code.charAt(i))) {
                i++;
            } else if (code.startsWith("//", i)) {
                int end = code.indexOf('\n', i);
                i = end < 0 ? n : end;
            } else if (code.startsWith("/*", i)) {
                int end = code.indexOf("*/", i + 2);
                i = end < 0 ? n : end + 2;
            } else {
                break;
            }
        }
        if (i >= n) {
            return false;
        }
        char c = code.charAt(i);
        if (Character.isJavaIdentifierStart(c)) {
            int end = i;
            while (end < n && Character.isJavaIdentifierPart(code.charAt(end))) {
                end++;
            }
            return !CONTINUATIONS.contains(code.substring(i, end));
        }
        if (c == '+' || c == '-') {
            return code.startsWith(c == '+' ? "++" : "--", i);
        }
        return Character.isDigit(c) || "\"'@({;".indexOf(c) >= 0;
    }

    /**
     * Record mode: the component lines of the wrapper lines a probe asked JShell about
     * (`raw`, lines 1..n of each outer wrapper class) as JShell translated them
     * (`translated`, the same frames in the same order), one `lines` event per class.
     */
    private static void lines(String id, StackTraceElement[] raw, StackTraceElement[] translated) throws IOException {
        if (raw.length != translated.length) {
            throw new IllegalStateException("recording: a probe of " + raw.length + " frames came back with "
                    + translated.length);
        }
        int i = 0;
        while (i < raw.length) {
            String cls = raw[i].getClassName();
            Origin first = null;
            StringBuilder lines = new StringBuilder();
            for (; i < raw.length && raw[i].getClassName().equals(cls); i++) {
                Origin o = origin(translated[i]);
                if (o != null && first == null) {
                    first = o;
                }
                int line = o == null || !o.component().equals(first.component()) ? 0
                        : o.firstLine() + Math.max(translated[i].getLineNumber(), 1) - 1;
                lines.append(lines.length() == 0 ? "" : ",").append(line);
            }
            if (first == null) {
                continue;
            }
            events.flushOutput();
            events.write("{\"event\":\"lines\",\"id\":" + json(id) + ",\"class\":" + json(cls) + ",\"component\":"
                    + json(first.component()) + ",\"lines\":[" + lines + "]}");
        }
    }

    /**
     * Record mode, inside JShell's evaluation: the invocation of `className` is written
     * as an `invoke` event (with whether JShell reports the snippet's value), and the
     * frames of a probe of every outer wrapper class not mapped yet are returned (lines 1
     * to the wrapper's last), or null if there are none.
     */
    private static StackTraceElement[] record(String className, String methodName) throws IOException {
        JShell shell = recordingShell;
        SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
        Boolean hasValue = null;
        List<StackTraceElement> frames = new ArrayList<>();
        for (Snippet s : shell.snippets().collect(Collectors.toList())) {
            if (s.kind() == Snippet.Kind.IMPORT || !shell.status(s).isDefined()) {
                continue;
            }
            SourceCodeAnalysis.SnippetWrapper w = analysis.wrapper(s);
            String cls = w.fullClassName();
            if (cls.equals(className)) {
                hasValue = s.subKind().hasValue();
            }
            if (probed.add(cls)) {
                int n = lineOf(w.wrapped(), w.wrapped().length());
                for (int line = 1; line <= n; line++) {
                    frames.add(new StackTraceElement(cls, "probe", null, line));
                }
            }
        }
        if (hasValue == null) {
            throw new IllegalStateException("recording: no snippet runs as " + className);
        }
        events.flushOutput();
        events.write("{\"event\":\"invoke\",\"id\":" + json(component) + ",\"class\":" + json(className)
                + ",\"method\":" + json(methodName) + ",\"value\":" + hasValue + "}");
        return frames.isEmpty() ? null : frames.toArray(new StackTraceElement[0]);
    }

    /** The class name an exception is reported with. */
    private static String kindOf(Throwable t) {
        if (t instanceof EvalException ee) {
            return ee.getExceptionClassName();
        } else if (t instanceof Replay.Thrown th) {
            return th.kind;
        }
        return t.getClass().getName();
    }

    /**
     * Reports an exception a snippet raised: JShell's (frames of snippets named `#ID`,
     * as JShell translates them), or a replay's (the same, see {@link Replay#thrown}).
     */
    private static void exception(String id, Throwable exception) throws IOException {
        String kind = kindOf(exception);
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
                trace.append("Caused by: ").append(kindOf(t));
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
        if (!checkClasses && !recording || warming) {
            return true;
        }
        if (refused) {
            // Nothing more of a refused statement is installed (nor asked about).
            return false;
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

    /**
     * Local execution (the snippet runs in this sandboxed JVM) with every class vetted
     * first, loaded or redefined.
     */
    private static final class Checked extends LocalExecutionControl {
        @Override
        public void load(ClassBytecodes[] classes)
                throws ClassInstallException, NotImplementedException, EngineTerminationException {
            if (!allowed(classes)) {
                refuse(classes);
                // Nothing was installed, and JShell is told so: its record of what is loaded stays exact.
                throw new ClassInstallException("load: not allowed by the access list", new boolean[classes.length]);
            }
            if (recording) {
                // Recorded by the supervisor (it answered), defined by each replay.
                return;
            }
            super.load(classes);
            installed(classes);
        }

        /**
         * Redefines in place through java.lang.instrument, as JShell's JDI engine does
         * through VirtualMachine.redefineClasses, and failing where it fails: a class that
         * is not loaded, or that the JVM will not redefine (a changed schema: members added
         * or removed, another superclass, other nest members, ...), is a
         * ClassInstallException with nothing installed, and JShell replaces the classes
         * with new ones instead (through load). New code is new code: it is vetted by the
         * supervisor first, exactly as loaded classes are, and refused code is never
         * installed.
         */
        @Override
        public void redefine(ClassBytecodes[] classes)
                throws ClassInstallException, NotImplementedException, EngineTerminationException {
            if (recording) {
                // Nothing was loaded to redefine: JShell replaces the classes with newly
                // named ones (through load), so that a replay only ever loads. A replay
                // then differs from a run (which redefines in place): a compile host's
                // job says so, and the request runs as a whole JShell instead.
                redefined = true;
                throw new ClassInstallException("redefine: recording", new boolean[classes.length]);
            }
            if (instrumentation == null) {
                // Without the agent (never in a sandbox): JShell replaces the classes instead.
                throw new NotImplementedException("redefine: the driver runs without its agent");
            }
            ClassDefinition[] definitions = new ClassDefinition[classes.length];
            for (int i = 0; i < classes.length; i++) {
                try {
                    definitions[i] = new ClassDefinition(findClass(classes[i].name()), classes[i].bytecodes());
                } catch (ClassNotFoundException e) {
                    throw new ClassInstallException("redefine: " + e.getMessage(), new boolean[classes.length]);
                }
            }
            if (!allowed(classes)) {
                if (!refused) {
                    refusedTruthfully = anyExecutable(definitions);
                }
                refuse(classes);
                if (refusedTruthfully) {
                    throw new ClassInstallException("redefine: not allowed by the access list",
                            new boolean[classes.length]);
                }
                // JShell is told the classes were redefined, so that it does not replace
                // them with new ones (more of the same refused code): undo() declares the
                // earlier method or class again, which redefines them back to the code the
                // JVM still runs and puts JShell's records right.
                return;
            }
            try {
                instrumentation.redefineClasses(definitions);
            } catch (Exception | LinkageError | InternalError e) {
                throw new ClassInstallException("redefine: " + e, new boolean[classes.length]);
            }
            classesRedefined(classes);
            installed(classes);
        }

        @Override
        public String invoke(String className, String methodName)
                throws RunException, EngineTerminationException, InternalException {
            if (refused || refusedClasses.contains(className)) {
                throw new UserException("not run: denied by the access list", DENIED_CLASS, new StackTraceElement[0]);
            }
            if (recording) {
                StackTraceElement[] frames;
                try {
                    frames = record(className, methodName);
                } catch (IOException e) {
                    throw new EngineTerminationException("recording: " + e);
                }
                if (frames == null) {
                    return "";
                }
                // JShell maps the probe's frames to snippet lines as it maps a real
                // exception's (its own translation, no other API gives it).
                probes.add(frames);
                throw new UserException("recording", PROBE_CLASS, frames);
            }
            return super.invoke(className, methodName);
        }

        @Override
        public String varValue(String className, String varName)
                throws RunException, EngineTerminationException, InternalException {
            return recording ? "" : super.varValue(className, varName);
        }

        private static void refuse(ClassBytecodes[] classes) {
            refused = true;
            for (ClassBytecodes c : classes) {
                refusedClasses.add(c.name());
            }
        }

        private static void installed(ClassBytecodes[] classes) {
            for (ClassBytecodes c : classes) {
                refusedClasses.remove(c.name());
            }
        }

        /** Whether one of these classes runs a snippet (statement, expression or variable). */
        private static boolean anyExecutable(ClassDefinition[] definitions) {
            for (ClassDefinition d : definitions) {
                try {
                    d.getDefinitionClass().getDeclaredMethod(DO_IT);
                    return true;
                } catch (NoSuchMethodException e) {
                    // A method's or a class's wrapper.
                } catch (LinkageError | SecurityException e) {
                    // Cannot tell: being told the truth, JShell replaces the classes (safe either way).
                    return true;
                }
            }
            return false;
        }
    }

    /**
     * Replay mode: runs a program recorded by a compile pass (a record-mode run) without
     * JShell or javac: JShell's own local execution control loads each recorded class
     * batch and invokes each recorded snippet, and the driver reports as a normal run
     * does. The supervisor vetted the classes when it recorded them; nothing is asked.
     */
    static final class Replay {
        /** Per outer wrapper class: the component and the component line of each wrapper line. */
        private record Lines(String component, int[] lines) {}

        private static final Map<String, Lines> wrappers = new HashMap<>();

        /** An exception of a replayed snippet with JShell's frames (see {@link #thrown}). */
        static final class Thrown extends Exception {
            private static final long serialVersionUID = 1L;
            final String kind;

            Thrown(String kind, String message, StackTraceElement[] frames, Throwable cause) {
                super(message, cause, false, true);
                this.kind = kind;
                setStackTrace(frames);
            }
        }

        static void run(DataInputStream in, int maxValueChars, boolean warm) throws IOException {
            PrintStream out = new PrintStream(events.stream("stdout"), true, StandardCharsets.UTF_8);
            PrintStream err = new PrintStream(events.stream("stderr"), true, StandardCharsets.UTF_8);
            System.setOut(out);
            System.setErr(err);
            SnippetInput snippetIn = new SnippetInput();
            ExecutionControl control = new LocalExecutionControl();
            if (warm) {
                // Started ahead of its request: the JVM is up, and JShell's execution
                // engine has loaded and invoked a class of the driver's own; the
                // program comes with the rest of the input.
                try {
                    control.load(new ExecutionControl.ClassBytecodes[] {
                        new ExecutionControl.ClassBytecodes(WARM_CLASS, warmClass())});
                    control.invoke(WARM_CLASS, DO_IT);
                } catch (ExecutionControl.ExecutionControlException e) {
                    throw new IOException("replay: warm-up: " + e.getMessage(), e);
                }
                events.flushOutput();
                events.write("{\"event\":\"ready\"}");
            }
            snippetIn.set(bytes(in));
            System.setIn(snippetIn);
            int count = in.readInt();
            for (int i = 0; i < count; i++) {
                String cls = text(in);
                String comp = text(in);
                int n = in.readInt();
                if (n < 0 || n > (1 << 20)) {
                    throw new IOException("bad line count " + n);
                }
                int[] lines = new int[n];
                for (int j = 0; j < n; j++) {
                    lines[j] = in.readInt();
                }
                wrappers.put(cls, new Lines(comp, lines));
                // Frames map through the origins as JShell's translated ones do.
                origins.put("replay:" + comp, new Origin(comp, 1));
            }
            int components = in.readInt();
            for (int c = 0; c < components; c++) {
                String id = text(in);
                component = id;
                events.flushOutput();
                events.write("{\"event\":\"start\",\"id\":" + json(id) + "}");
                boolean ok = true;
                int steps = in.readInt();
                for (int k = 0; k < steps; k++) {
                    int step = in.readByte();
                    if (step == STEP_LOAD) {
                        int n = in.readInt();
                        if (n < 0 || n > (1 << 16)) {
                            throw new IOException("bad class count " + n);
                        }
                        ExecutionControl.ClassBytecodes[] batch = new ExecutionControl.ClassBytecodes[n];
                        for (int j = 0; j < n; j++) {
                            batch[j] = new ExecutionControl.ClassBytecodes(text(in), bytes(in));
                        }
                        try {
                            control.load(batch);
                        } catch (ExecutionControl.ExecutionControlException e) {
                            throw new IOException("replay: load: " + e.getMessage(), e);
                        }
                    } else if (step == STEP_INVOKE) {
                        String cls = text(in);
                        boolean hasValue = in.readBoolean();
                        ok &= invoke(control, id, cls, hasValue, maxValueChars);
                    } else {
                        throw new IOException("bad step " + step);
                    }
                }
                events.flushOutput();
                events.write("{\"event\":\"end\",\"id\":" + json(id) + ",\"ok\":" + ok + "}");
            }
            in.close();
        }

        /** The class a replay started ahead loads and invokes (no snippet is named so). */
        private static final String WARM_CLASS = "REPL.$JShell$Warm";

        /** `REPL.$JShell$Warm`, whose `do_it$()` returns "", as a class file (Java 17). */
        static byte[] warmClass() throws IOException {
            java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
            java.io.DataOutputStream out = new java.io.DataOutputStream(bytes);
            out.writeInt(0xCAFEBABE);
            out.writeShort(0);
            out.writeShort(61);
            // Constant pool: #1 the class's name, #2 its class, #3 Object's name, #4 its
            // class, #5 do_it$, #6 its descriptor, #7 "Code", #8 "", #9 the string "".
            out.writeShort(10);
            out.writeByte(1);
            out.writeUTF("REPL/$JShell$Warm");
            out.writeByte(7);
            out.writeShort(1);
            out.writeByte(1);
            out.writeUTF("java/lang/Object");
            out.writeByte(7);
            out.writeShort(3);
            for (String utf8 : new String[] {DO_IT, "()Ljava/lang/String;", "Code", ""}) {
                out.writeByte(1);
                out.writeUTF(utf8);
            }
            out.writeByte(8);
            out.writeShort(8);
            // public class, this #2, super #4, no interfaces or fields, one method:
            // public static do_it$ with a Code attribute (ldc #9; areturn).
            out.writeShort(0x0021);
            out.writeShort(2);
            out.writeShort(4);
            out.writeShort(0);
            out.writeShort(0);
            out.writeShort(1);
            out.writeShort(0x0009);
            out.writeShort(5);
            out.writeShort(6);
            out.writeShort(1);
            out.writeShort(7);
            byte[] code = {0x12, 9, (byte) 0xB0};
            out.writeInt(2 + 2 + 4 + code.length + 2 + 2);
            out.writeShort(1);
            out.writeShort(0);
            out.writeInt(code.length);
            out.write(code);
            out.writeShort(0);
            out.writeShort(0);
            out.writeShort(0);
            out.flush();
            return bytes.toByteArray();
        }

        /** Invokes one snippet as JShell's evaluation does, and reports its value or exception. */
        private static boolean invoke(ExecutionControl control, String id, String cls, boolean hasValue,
                int maxValueChars) throws IOException {
            String value;
            try {
                value = control.invoke(cls, DO_IT);
            } catch (ExecutionControl.UserException | ExecutionControl.ResolutionException e) {
                exception(id, thrown(e));
                return false;
            } catch (ExecutionControl.RunException | ExecutionControl.InternalException e) {
                // JShell reports neither (a stop, or its own problem): no value.
                return true;
            } catch (ExecutionControl.EngineTerminationException e) {
                throw new IOException("replay: " + e.getMessage(), e);
            }
            value = hasValue ? expunge(value) : "";
            if (value.length() > maxValueChars) {
                value = value.substring(0, maxValueChars) + "...";
            }
            events.flushOutput();
            events.write("{\"event\":\"value\",\"id\":" + json(id) + ",\"repr\":" + json(value) + "}");
            return true;
        }

        /**
         * An exception of the execution control as JShell makes it (EvalException or
         * UnresolvedReferenceException, with its cause chain): frames up to the last of a
         * wrapper class, a wrapper's frames named as JShell names them and mapped to their
         * component lines by the recorded line tables.
         */
        static Throwable thrown(Throwable t) {
            if (t == null) {
                return null;
            }
            String kind;
            String message = t.getMessage();
            if (t instanceof ExecutionControl.UserException ue) {
                kind = ue.causeExceptionClass();
            } else if (t instanceof ExecutionControl.ResolutionException) {
                kind = "jdk.jshell.UnresolvedReferenceException";
                message = "Attempt to use definition snippet with unresolved references";
            } else {
                kind = t.getClass().getName();
            }
            StackTraceElement[] raw = t.getStackTrace();
            int last = raw.length;
            do {
                if (last == 0) {
                    last = raw.length - 1;
                    break;
                }
            } while (!WRAPPER.matcher(raw[--last].getClassName()).find());
            StackTraceElement[] frames = new StackTraceElement[Math.max(last + 1, 0)];
            for (int i = 0; i <= last; i++) {
                StackTraceElement r = raw[i];
                java.util.regex.Matcher m = WRAPPER.matcher(r.getClassName());
                Lines lines = m.find() ? wrappers.get("REPL." + m.group("class")) : null;
                if (lines != null && lines.lines().length > 0) {
                    int at = Math.max(0, Math.min(r.getLineNumber(), lines.lines().length) - 1);
                    String method = r.getMethodName().equals(DO_IT) ? "" : r.getMethodName();
                    frames[i] = new StackTraceElement(expunge(r.getClassName()), method,
                            "#replay:" + lines.component(), lines.lines()[at]);
                } else if ("<none>".equals(r.getFileName())) {
                    frames[i] = new StackTraceElement(r.getClassName(), r.getMethodName(), null, r.getLineNumber());
                } else {
                    frames[i] = r;
                }
            }
            return new Thrown(kind, message, frames, thrown(t.getCause()));
        }

        /** A name without JShell's wrapper prefixes (JShell's own `expunge`). */
        static String expunge(String s) {
            StringBuilder b = new StringBuilder();
            for (String part : WRAPPER.split(s)) {
                b.append(part);
            }
            return b.toString();
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
