import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java client's side of test/integration/codecs.test.ts: Apache Kafka's own producer and consumer (kafka-clients
 * from .cache/kafka/VERSION/libs), to prove that what kafkajs writes with each codec is what the Java client reads, and
 * the other way round. Run as a single-file program:
 *
 *   java -cp '.cache/kafka/VERSION/libs/*' kafka/CodecInterop.java BROKERS COMMAND...
 *
 * with commands
 *   produce:TOPIC:CODEC:FILE   each line of FILE (base64 key, tab, base64 value) as one record, compression.type=CODEC
 *   consume:TOPIC:FILE         every record of TOPIC from the beginning to its end offsets into FILE, one line each:
 *                              partition, tab, offset, tab, base64 key, tab, base64 value
 */
public class CodecInterop {
  public static void main(String[] args) throws Exception {
    String brokers = args[0];
    for (int i = 1; i < args.length; i++) {
      String[] command = args[i].split(":", 4);
      switch (command[0]) {
        case "produce" -> produce(brokers, command[1], command[2], Path.of(command[3]));
        case "consume" -> consume(brokers, command[1], Path.of(command[2]));
        default -> throw new IllegalArgumentException("unknown command " + args[i]);
      }
    }
  }

  private static byte[] decode(String text) {
    return text.isEmpty() ? null : Base64.getDecoder().decode(text);
  }

  private static String encode(byte[] bytes) {
    return bytes == null ? "" : Base64.getEncoder().encodeToString(bytes);
  }

  static void produce(String brokers, String topic, String codec, Path file) throws Exception {
    Properties props = new Properties();
    props.put("bootstrap.servers", brokers);
    props.put("compression.type", codec);
    props.put("acks", "all");
    // Everything in as few batches as the size allows, so the batches are compressed as a whole.
    props.put("linger.ms", "100");
    props.put("batch.size", "1000000");
    try (KafkaProducer<byte[], byte[]> producer =
        new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
      for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
        if (line.isEmpty()) continue;
        String[] fields = line.split("\t", -1);
        producer.send(new ProducerRecord<>(topic, decode(fields[0]), decode(fields[1])));
      }
      producer.flush();
    }
  }

  static void consume(String brokers, String topic, Path file) throws Exception {
    Properties props = new Properties();
    props.put("bootstrap.servers", brokers);
    props.put("enable.auto.commit", "false");
    try (KafkaConsumer<byte[], byte[]> consumer =
        new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      List<TopicPartition> partitions = new ArrayList<>();
      consumer.partitionsFor(topic).forEach(p -> partitions.add(new TopicPartition(topic, p.partition())));
      consumer.assign(partitions);
      consumer.seekToBeginning(partitions);
      var end = consumer.endOffsets(partitions);
      List<String> lines = new ArrayList<>();
      long deadline = System.currentTimeMillis() + 30_000;
      while (partitions.stream().anyMatch(p -> consumer.position(p) < end.get(p))) {
        if (System.currentTimeMillis() > deadline) throw new IllegalStateException("timed out reading " + topic);
        for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
          lines.add(r.partition() + "\t" + r.offset() + "\t" + encode(r.key()) + "\t" + encode(r.value()));
        }
      }
      Files.write(file, lines, StandardCharsets.UTF_8);
    }
  }
}
