// A stand-in for jsheets' backend (java-sheets/java-sheets), built from Debian's jars by
// tests/jsheets_backend.rs: it finds runtime nodes in ZooKeeper the way jsheets' backend
// does (Curator service discovery, `builder(Void.class)`, base path /jsheets/services,
// service `runtime`, a round-robin ServiceProvider) and evaluates snippets over gRPC with
// stubs generated from jsheets' own proto only (proto/jsheets/api/*.proto next to this
// file), so the node's extension fields reach it as unknown fields.
//
// Usage: java JsheetsBackend ZOOKEEPER_CONNECTION_STRING < commands
//
// Commands, one JSON object per line on standard input; answers, one JSON object per
// line on standard output (logs go to standard error):
//   {"cmd":"instances"}
//       -> {"type":"instances","names":[..],"instances":[{"id":..,"address":..,"port":..},..]}
//          the service names under the base path, and what the ServiceProvider's cache
//          holds now
//   {"cmd":"evaluate","case":NAME,"components":[{"id":..,"code":..},...],
//    "stopAfterOutput":false,"timeoutMs":60000}
//       one Evaluate call as jsheets makes it: one `start` holding one SnippetSources
//       with the components (order = position, from 1), then responses are read until
//       the server completes the stream; the client never half-closes. With
//       stopAfterOutput, a `stop` is sent after the first response carrying a result.
//       -> {"type":"response","case":..,"ms":..,"results":[..],"errors":[..],
//           "missingSources":n,"unknownFields":[field numbers]} per response, then
//          {"type":"end","case":..,"status":"OK"|gRPC code|"NO_INSTANCE"|"CLIENT_TIMEOUT",
//           "description":..,"ms":..,"firstResponseMs":..,"stopSentMs":..,
//           "responses":n,"instance":{..}}
//          `ms` is the time from sending `start` to the end of the stream.
// End of input closes everything and exits 0; {"type":"ready"} is printed once
// discovery has started.

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import jsheets.CodeSpan;
import jsheets.EvaluateRequest;
import jsheets.EvaluateResponse;
import jsheets.EvaluatedSnippet;
import jsheets.EvaluationError;
import jsheets.EvaluationResult;
import jsheets.Snippet;
import jsheets.SnippetRuntimeGrpc;
import jsheets.SnippetSources;
import jsheets.StartEvaluationRequest;
import jsheets.StopEvaluationRequest;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;
import org.apache.curator.x.discovery.ServiceProvider;
import org.apache.curator.x.discovery.strategies.RoundRobinStrategy;
import org.apache.zookeeper.KeeperException;

public final class JsheetsBackend {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final Object OUT = new Object();

  private final ServiceDiscovery<Void> discovery;
  private final ServiceProvider<Void> provider;
  private final Map<String, ManagedChannel> channels = new HashMap<>();

  private JsheetsBackend(ServiceDiscovery<Void> discovery, ServiceProvider<Void> provider) {
    this.discovery = discovery;
    this.provider = provider;
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: java JsheetsBackend ZOOKEEPER_CONNECTION_STRING < commands");
      System.exit(64);
    }
    CuratorFramework curator =
        CuratorFrameworkFactory.newClient(args[0], new ExponentialBackoffRetry(200, 10));
    curator.start();
    ServiceDiscovery<Void> discovery =
        ServiceDiscoveryBuilder.builder(Void.class)
            .client(curator)
            .basePath("/jsheets/services")
            .build();
    discovery.start();
    ServiceProvider<Void> provider =
        discovery
            .serviceProviderBuilder()
            .serviceName("runtime")
            .providerStrategy(new RoundRobinStrategy<>())
            .build();
    provider.start();
    JsheetsBackend backend = new JsheetsBackend(discovery, provider);
    emit(JSON.createObjectNode().put("type", "ready"));
    try (BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
      for (String line; (line = in.readLine()) != null; ) {
        if (line.isBlank()) {
          continue;
        }
        JsonNode command = JSON.readTree(line);
        switch (command.path("cmd").asText()) {
          case "instances" -> backend.instances();
          case "evaluate" -> backend.evaluate(command);
          default -> throw new IllegalArgumentException("unknown command: " + line);
        }
      }
    } finally {
      backend.channels.values().forEach(ManagedChannel::shutdownNow);
      provider.close();
      discovery.close();
      curator.close();
    }
  }

  private void instances() throws Exception {
    ObjectNode answer = JSON.createObjectNode().put("type", "instances");
    ArrayNode names = answer.putArray("names");
    try {
      discovery.queryForNames().forEach(names::add);
    } catch (KeeperException.NoNodeException e) {
      // Nothing registered yet: no base path.
    }
    ArrayNode list = answer.putArray("instances");
    for (ServiceInstance<Void> instance : provider.getAllInstances()) {
      list.add(describe(instance));
    }
    emit(answer);
  }

  private void evaluate(JsonNode command) throws Exception {
    String name = command.path("case").asText();
    boolean stopAfterOutput = command.path("stopAfterOutput").asBoolean(false);
    long timeoutMs = command.path("timeoutMs").asLong(60_000);

    Snippet.Reference reference =
        Snippet.Reference.newBuilder().setSheetId("sheet-1").setSnippetId(name).build();
    SnippetSources.Builder sources =
        SnippetSources.newBuilder().setReference(reference).setHash("hash-" + name);
    int order = 0;
    for (JsonNode component : command.path("components")) {
      sources.addCodeComponents(
          SnippetSources.CodeComponent.newBuilder()
              .setId(component.path("id").asText())
              .setOrder(++order)
              .setCode(component.path("code").asText()));
    }
    EvaluateRequest start =
        EvaluateRequest.newBuilder()
            .setStart(
                StartEvaluationRequest.newBuilder()
                    .setSnippet(
                        EvaluatedSnippet.newBuilder()
                            .setReference(reference)
                            .setHash("hash-" + name))
                    .addSources(sources))
            .build();

    ObjectNode end = JSON.createObjectNode().put("type", "end").put("case", name);
    ServiceInstance<Void> instance = provider.getInstance();
    if (instance == null) {
      emit(end.put("status", "NO_INSTANCE").put("description", "no runtime node discovered"));
      return;
    }
    end.set("instance", describe(instance));
    ManagedChannel channel =
        channels.computeIfAbsent(
            instance.getAddress() + ":" + instance.getPort(),
            k ->
                ManagedChannelBuilder.forAddress(instance.getAddress(), instance.getPort())
                    .usePlaintext()
                    .build());

    CountDownLatch done = new CountDownLatch(1);
    AtomicReference<Status> status = new AtomicReference<>();
    AtomicReference<StreamObserver<EvaluateRequest>> requests = new AtomicReference<>();
    long[] firstResponseNanos = {-1};
    long[] stopSentNanos = {-1};
    int[] responses = {0};
    long started = System.nanoTime();
    StreamObserver<EvaluateResponse> observer =
        new StreamObserver<>() {
          @Override
          public void onNext(EvaluateResponse response) {
            long now = System.nanoTime();
            synchronized (responses) {
              responses[0]++;
              if (firstResponseNanos[0] < 0) {
                firstResponseNanos[0] = now;
              }
            }
            emit(describe(name, response, now - started));
            if (stopAfterOutput && stopSentNanos[0] < 0 && response.getResultCount() > 0) {
              stopSentNanos[0] = System.nanoTime();
              requests
                  .get()
                  .onNext(
                      EvaluateRequest.newBuilder()
                          .setStop(StopEvaluationRequest.getDefaultInstance())
                          .build());
            }
          }

          @Override
          public void onError(Throwable t) {
            status.set(Status.fromThrowable(t));
            done.countDown();
          }

          @Override
          public void onCompleted() {
            status.set(Status.OK);
            done.countDown();
          }
        };
    synchronized (responses) {
      // onNext may run before `requests` is set otherwise.
      requests.set(SnippetRuntimeGrpc.newStub(channel).evaluate(observer));
      requests.get().onNext(start);
    }
    boolean finished = done.await(timeoutMs, TimeUnit.MILLISECONDS);
    long elapsed = System.nanoTime() - started;
    if (!finished) {
      ((ClientCallStreamObserver<EvaluateRequest>) requests.get())
          .cancel("the client gave up after " + timeoutMs + " ms", null);
      end.put("status", "CLIENT_TIMEOUT");
    } else {
      Status s = status.get();
      end.put("status", s.getCode().name());
      if (s.getDescription() != null) {
        end.put("description", s.getDescription());
      }
    }
    end.put("ms", millis(elapsed));
    synchronized (responses) {
      end.put("responses", responses[0]);
      end.put(
          "firstResponseMs",
          firstResponseNanos[0] < 0 ? null : millis(firstResponseNanos[0] - started));
    }
    if (stopSentNanos[0] >= 0) {
      end.put("stopSentMs", millis(stopSentNanos[0] - started));
    }
    emit(end);
  }

  private static ObjectNode describe(ServiceInstance<Void> instance) {
    ObjectNode o = JSON.createObjectNode();
    o.put("id", instance.getId());
    o.put("address", instance.getAddress());
    o.put("port", instance.getPort());
    return o;
  }

  private static ObjectNode describe(String name, EvaluateResponse response, long nanos) {
    ObjectNode o = JSON.createObjectNode().put("type", "response").put("case", name);
    o.put("ms", millis(nanos));
    ArrayNode results = o.putArray("results");
    for (EvaluationResult r : response.getResultList()) {
      results
          .addObject()
          .put("componentId", r.getComponentId())
          .put("kind", r.getKind().name())
          .put("output", r.getOutput());
    }
    ArrayNode errors = o.putArray("errors");
    for (EvaluationError e : response.getErrorList()) {
      ObjectNode error =
          errors
              .addObject()
              .put("componentId", e.getComponentId())
              .put("kind", e.getKind())
              .put("message", e.getMessage());
      if (e.hasSpan()) {
        CodeSpan span = e.getSpan();
        error.putObject("span").put("start", span.getStart()).put("end", span.getEnd());
      } else {
        error.putNull("span");
      }
    }
    o.put("missingSources", response.getMissingSourcesCount());
    ArrayNode unknown = o.putArray("unknownFields");
    response.getUnknownFields().asMap().keySet().forEach(unknown::add);
    return o;
  }

  private static double millis(long nanos) {
    return Math.round(nanos / 1e4) / 100.0;
  }

  private static void emit(ObjectNode o) {
    try {
      String line = JSON.writeValueAsString(o);
      synchronized (OUT) {
        System.out.println(line);
        System.out.flush();
      }
    } catch (Exception e) {
      throw new IllegalStateException(e);
    }
  }
}
