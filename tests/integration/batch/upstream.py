"""What the upstream-batch tests share: the fake batch APIs and a policy whose batch lines go
to a model with ``batch_api`` on (OpenAI's or Anthropic's), at half price."""

from __future__ import annotations

from tests.fake_batch_upstream import ANTHROPIC_KEY, BUCKET, FakeBatches
from tests.fake_upstream import FakeUpstream
from tests.integration.batch.conftest import batch_policy

BULK = {
    "openai": """\
  bulk:
    provider: openai_compatible
    base_url: {base_url}
    model: gpt-bulk
    api_key: sk-upstream-secret
    price: {{input_per_mtok: 2, output_per_mtok: 8, batch_discount: 0.5}}
    batch_api: {{flush_s: {flush_s}, poll_s: 0.05, poll_max_s: 0.2, min_lines: {min_lines}}}
""",
    "anthropic": """\
  bulk:
    provider: anthropic
    base_url: {url}
    model: claude-bulk
    api_key: {key}
    price: {{input_per_mtok: 2, output_per_mtok: 8, batch_discount: 0.5}}
    batch_api: {{flush_s: {flush_s}, poll_s: 0.05, poll_max_s: 0.2, min_lines: {min_lines}}}
""",
    "bedrock": """\
  bulk:
    provider: bedrock
    model: anthropic.claude-3-haiku-20240307-v1:0
    aws: {{region: us-east-1, access_key_id: AKIDFAKEBATCH, secret_access_key: fake-secret}}
    price: {{input_per_mtok: 2, output_per_mtok: 8, batch_discount: 0.5}}
    batch_api:
      flush_s: {flush_s}
      poll_s: 0.05
      poll_max_s: 0.2
      s3_uri: s3://{bucket}/jobs
      role_arn: arn:aws:iam::123456789012:role/batch-inference
      control_url: {url}
      s3_url: {url}
      min_lines: {min_lines}
""",
}


def upstream_policy(
    primary: FakeUpstream,
    backup: FakeUpstream,
    fake: FakeBatches,
    api: str,
    *,
    concurrency: int = 4,
    flush_s: float = 0.3,
    min_lines: int = 1,
) -> str:
    """Batch lines go to ``bulk`` (on ``fake``'s ``api``); live requests to ``main``."""
    rule = "- {name: batch-work, when: {batch: true}, to: bulk}\n"
    text = batch_policy(primary, backup, concurrency=concurrency, extra_routes=rule)
    bulk = BULK[api].format(
        base_url=fake.base_url,
        url=fake.url,
        key=ANTHROPIC_KEY,
        flush_s=flush_s,
        bucket=BUCKET,
        min_lines=min_lines,
    )
    return text.replace("models:\n", "models:\n" + bulk, 1)
