package userlogin.local;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.metadata.authorizer.StandardAuthorizer;
import org.apache.kafka.server.authorizer.Action;
import org.apache.kafka.server.authorizer.AuthorizableRequestContext;
import org.apache.kafka.server.authorizer.AuthorizationResult;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Apache Kafka's StandardAuthorizer (KRaft ACLs), made as strict as Amazon MSK's IAM access control in the two places
 * where MSK documents that it differs from Kafka ACLs. The embedded broker (functions/local/embedded-kafka.ts,
 * option `authorization`) compiles this file with javac into the git-ignored .cache and loads it as
 * authorizer.class.name. The ACLs come from the stack's IAM policies (functions/local/iam-acl.ts).
 *
 * 1. Idempotent producers. Apache Kafka 3.0 and later (KIP-679) let an idempotent producer's InitProducerId through
 *    with IDEMPOTENT_WRITE on the cluster OR with WRITE on any topic: KafkaApis.handleInitProducerIdRequest calls
 *    authorize(IDEMPOTENT_WRITE, CLUSTER) || authorizeByResourceType(WRITE, TOPIC) (the only caller of
 *    authorizeByResourceType in the 4.1 broker). The MSK Developer Guide ("Create authorization policies for the IAM
 *    role") says that for Kafka 2.8.0 and later IAM access control does not offer the same: WriteData on a topic does
 *    not allow idempotent writes; only WriteData on all topics does, otherwise kafka-cluster:WriteDataIdempotently on
 *    the cluster is needed (kafkajs issue 1623 and librdkafka issue 4446 show the resulting "Cluster authorization
 *    failed" on MSK). So authorizeByResourceType(WRITE, TOPIC) here is allowed only with WRITE on every topic (the
 *    LITERAL "*" topic ACL, what topic/CLUSTER/UUID/* maps to), and every other by-resource-type question is denied.
 *
 * 2. No implied DESCRIBE. Kafka ACLs imply DESCRIBE from READ, WRITE, DELETE and ALTER, and DESCRIBE_CONFIGS from
 *    ALTER_CONFIGS. IAM policies have no such hierarchy: the guide's action table lists the describe action among
 *    each action's "Required actions" (WriteData and ReadData require DescribeTopic, AlterGroup requires
 *    DescribeGroup, AlterTopicDynamicConfiguration requires DescribeTopicDynamicConfiguration, ...). So DESCRIBE and
 *    DESCRIBE_CONFIGS are allowed here only with an ACL for exactly that operation (or ALL). Stricter than Kafka, never
 *    more permissive: a grant that passes here is at least what the guide asks for.
 *
 * Super users (super.users) are allowed everything, as in StandardAuthorizer. Every denial this class adds is logged
 * to kafka.authorizer.logger like Kafka's own ("Principal = ... is Denied operation = ... on resource = ..."), naming
 * the ACL that is missing, so that a test can tell which grant a failing client lacked.
 */
public class MskLikeAuthorizer extends StandardAuthorizer {
    private static final Set<AclOperation> IMPLIED_BY_OTHERS = EnumSet.of(AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS);

    private static final Logger AUDIT = LoggerFactory.getLogger("kafka.authorizer.logger");

    private volatile Set<String> superUsers = Set.of();

    @Override
    public void configure(Map<String, ?> configs) {
        super.configure(configs);
        Object value = configs.get(SUPER_USERS_CONFIG);
        superUsers = value == null ? Set.of()
            : Arrays.stream(value.toString().split(";")).map(String::trim).filter(s -> !s.isEmpty())
                .collect(Collectors.toUnmodifiableSet());
    }

    private boolean isSuperUser(AuthorizableRequestContext context) {
        return superUsers.contains(context.principal().toString());
    }

    @Override
    public List<AuthorizationResult> authorize(AuthorizableRequestContext context, List<Action> actions) {
        List<AuthorizationResult> results = super.authorize(context, actions);
        if (isSuperUser(context)) return results;
        List<AuthorizationResult> strict = new ArrayList<>(results.size());
        for (int i = 0; i < actions.size(); i++) {
            Action action = actions.get(i);
            AuthorizationResult result = results.get(i);
            boolean needsExplicit = result == AuthorizationResult.ALLOWED
                && IMPLIED_BY_OTHERS.contains(action.operation());
            if (needsExplicit && !explicitlyAllowed(context, action)) {
                if (action.logIfDenied()) {
                    audit(context, action.operation(), action.resourcePattern(),
                        "only an ACL for exactly this operation allows it (MSK: no implied describe)");
                }
                strict.add(AuthorizationResult.DENIED);
            } else {
                strict.add(result);
            }
        }
        return strict;
    }

    @Override
    public AuthorizationResult authorizeByResourceType(AuthorizableRequestContext context, AclOperation op,
                                                       ResourceType resourceType) {
        if (isSuperUser(context)) return AuthorizationResult.ALLOWED;
        if (op == AclOperation.WRITE && resourceType == ResourceType.TOPIC) {
            Action everyTopic = new Action(AclOperation.WRITE,
                new ResourcePattern(ResourceType.TOPIC, ResourcePattern.WILDCARD_RESOURCE, PatternType.LITERAL), 1, false, false);
            AuthorizationResult result = super.authorize(context, List.of(everyTopic)).get(0);
            // The broker asks this only after IDEMPOTENT_WRITE on the cluster was denied (and does not log that).
            if (result == AuthorizationResult.DENIED) {
                audit(context, AclOperation.IDEMPOTENT_WRITE,
                    new ResourcePattern(ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL),
                    "InitProducerId: WRITE on some topics does not imply it on MSK, WRITE on every topic would");
            }
            return result;
        }
        return AuthorizationResult.DENIED;
    }

    private static void audit(AuthorizableRequestContext context, AclOperation op, ResourcePattern resource, String why) {
        AUDIT.info("Principal = {} is Denied operation = {} from host = {} on resource = {}:{}:{} ({})",
            context.principal(), op, context.clientAddress().getHostAddress(),
            capitalized(resource.resourceType().name()), resource.patternType(), resource.name(), why);
    }

    private static String capitalized(String name) {
        StringBuilder out = new StringBuilder();
        for (String word : name.toLowerCase().split("_")) {
            out.append(Character.toUpperCase(word.charAt(0))).append(word.substring(1));
        }
        return out.toString();
    }

    /** An ALLOW ACL with exactly this operation (or ALL) for this principal whose pattern covers the resource. */
    private boolean explicitlyAllowed(AuthorizableRequestContext context, Action action) {
        ResourcePattern resource = action.resourcePattern();
        String principal = context.principal().toString();
        String host = context.clientAddress().getHostAddress();
        for (AclOperation op : List.of(action.operation(), AclOperation.ALL)) {
            AclBindingFilter filter = new AclBindingFilter(
                new ResourcePatternFilter(resource.resourceType(), null, PatternType.ANY),
                new AccessControlEntryFilter(null, null, op, AclPermissionType.ALLOW));
            for (AclBinding binding : acls(filter)) {
                String who = binding.entry().principal();
                String where = binding.entry().host();
                if (!(who.equals(principal) || who.equals("User:*"))) continue;
                if (!(where.equals("*") || where.equals(host))) continue;
                if (covers(binding.pattern(), resource.name())) return true;
            }
        }
        return false;
    }

    private static boolean covers(ResourcePattern pattern, String name) {
        if (pattern.patternType() == PatternType.LITERAL) {
            return pattern.name().equals(ResourcePattern.WILDCARD_RESOURCE) || pattern.name().equals(name);
        }
        return pattern.patternType() == PatternType.PREFIXED && name.startsWith(pattern.name());
    }
}
