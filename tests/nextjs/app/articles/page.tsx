import { Rendered } from "../rendered";

export default function Articles() {
  return <Rendered what="articles" />;
}
