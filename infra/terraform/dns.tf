# One name for the head that works both inside the VPC and through the SSM tunnel: head.<cluster>.internal.
# Inside, this private zone resolves it to the head's address; on the admin's machine a hosts-file line sends it
# to 127.0.0.1, where the tunnel listens (infra/README.md). So the experiment's tracking URI,
# http://head.<cluster>.internal:5000, is the same for `submit`'s pre-flight check on the admin's machine and for
# the job on the cluster.

locals {
  internal_domain = "${var.cluster_name}.internal"
  head_hostname   = "head.${local.internal_domain}"
}

resource "aws_route53_zone" "internal" {
  #checkov:skip=CKV2_AWS_38:DNSSEC signing applies to public zones; this zone is private to the VPC.
  #checkov:skip=CKV2_AWS_39:Query logging of one private record would cost more than it tells; the VPC flow logs show who talks to the head.
  name = local.internal_domain

  vpc {
    vpc_id = aws_vpc.main.id
  }
}

resource "aws_route53_record" "head" {
  zone_id = aws_route53_zone.internal.zone_id
  name    = local.head_hostname
  type    = "A"
  ttl     = 60
  records = [aws_instance.head.private_ip]
}
