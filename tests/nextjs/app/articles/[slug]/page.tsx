import { Rendered, type SlugParams, generateSlugs } from "../../rendered";

export const generateStaticParams = generateSlugs;

export default async function Article({ params }: SlugParams) {
  const { slug } = await params;
  return <Rendered what={`article ${slug}`} />;
}
